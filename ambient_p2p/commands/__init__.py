"""CLI command groups: one module per group, each with ``register(subparsers)``.

A handler is ``func(args) -> int`` set with ``parser.set_defaults(func=...)``; it raises
:class:`ambient_p2p.errors.UserError` for user mistakes. Groups with subcommands set
``_parser`` to themselves so that a bare ``ambient-p2p GROUP`` prints the group's help.
"""
