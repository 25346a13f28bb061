from .cli_signals import main

main(prog_name="oomactors")
