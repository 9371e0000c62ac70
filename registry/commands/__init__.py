"""The `registry` command line's verbs, one module per kind of thing they act on; the
group that holds them is registry/cli.py."""
