"""The MICROS ISL plugin (`pms9.isl`), its install guide, and `islrun`, the interpreter that runs
the plugin against a real gateway so the register's half of the conversation is tested too."""
