"""Developer scripts; a package only so that tests can ``from scripts.splash import ...``."""
