"""The one error type for bad user input; the CLI turns it into one line and exit code 2."""


class BadInput(Exception):
    """Bad input from the user (file, flag, card, data). The message is shown as one line."""
