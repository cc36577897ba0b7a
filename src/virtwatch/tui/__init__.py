"""The Textual dashboard: screens, panes and widgets. It is built and wired by the
composition root, `virtwatch.cli.compose`; it never builds the runtime or the store."""
