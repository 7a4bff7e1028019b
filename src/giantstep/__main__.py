from giantstep.cli import command_line

command_line()
