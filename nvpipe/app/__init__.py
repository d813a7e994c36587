"""The application layer: the command line (`cli`, `commands`), batches (`batch`, `schedule`,
`manifest`), `info` and `progress`. It builds `Job`s and hands them to the engine."""
