"""A result sink that keeps what it is given, for tests to compare against files and counts."""


class Lines:
    def __init__(self):
        self.lines = []

    def write(self, line):
        self.lines.append(line)

    def close(self):
        pass
