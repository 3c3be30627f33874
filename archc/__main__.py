"""`archc` (the console script) and `python -m archc`: the command line in a process of its
own.

Ctrl-C ends the process with "interrupted" and exit code 130, never a traceback, from this
module's first line on. Until a command runs there is nothing to clean up, so the process
just leaves; while it runs, the interrupt unwinds it (an output's temporary file is removed
on the way, the old output stays whole) and cli.main says "interrupted" (cli.console).
Before this module runs, Python's own start-up is not archc's to handle.
"""
import signal

from .signals import quit_now


def entry() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:   # a background job ignores it
        signal.signal(signal.SIGINT, quit_now)
    from .cli import console       # the imports happen here, under the handler above
    raise SystemExit(console())


if __name__ == "__main__":
    entry()
