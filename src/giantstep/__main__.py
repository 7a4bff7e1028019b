from giantstep.cli import main

main()
