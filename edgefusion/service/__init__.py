"""Running as a systemd service: sd_notify, the watchdog gate, health in one status line."""
