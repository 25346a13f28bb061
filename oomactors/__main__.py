from .cli_signals import main

main()
