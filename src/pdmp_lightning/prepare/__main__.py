"""``python -m pdmp_lightning.prepare {cremad,ave,kinetics_sounds,ucf101} --raw DIR --out DIR``."""

from pdmp_lightning.prepare.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
