"""The command line, the top layer: the parser, the composition root (`compose`), and one
module per command (`commands/`).

    virtwatch [--uri URI] [--db PATH] [--interval S]      the dashboard
    virtwatch snapshot --json [--uri URI]                 one snapshot as JSON
    virtwatch db upgrade [--db PATH]                      migrate the database
    virtwatch db stats [--db PATH] [--json]               rows, sizes, time span per table
    virtwatch record [--uri URI] [--db PATH]              collect and store, no screen
    virtwatch vm ACTION NAME [--uri URI] [--timeout S]    start/shutdown/... one VM, verified
    virtwatch timeline --since T [--until T] [--vm V] [--host H] [--json]   incident timeline
    virtwatch export --since T [--until T] [--vm V] [--output FILE]         JSON for a ticket
    virtwatch health [--uri URI] [--db PATH] [--json]     every health check once; exit 0/1/2
"""
