"""vshx's global options, declared once: the option parser (frontends/cli.py), completion
(completion/engine.py) and the warm client (frontends/warm_client.py, which decides before
anything heavy is imported) read these tables.

Nothing is imported here: the program's first lines read it."""

# options that take a value (the next word, or ``--name=value``), with the field they set
TAKES_VALUE = {
    "-c": "uri",
    "--connect": "uri",
    "-f": "script",
    "--file": "script",
    "--record": "record",
}
# options that take none, with the field they set
FLAGS = {
    "-x": "echo",
    "--dry-run": "dry_run",
    "--plan-json": "plan_json",
    "--teach": "teach",
    "-q": "quiet",
    "--quiet": "quiet",
    "--trace": "trace",
}
