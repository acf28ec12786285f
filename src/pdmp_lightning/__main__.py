"""``python -m pdmp_lightning fit|validate|test|predict --config cfg.yaml``."""

from pdmp_lightning.cli import entry_point

if __name__ == "__main__":
    entry_point()
