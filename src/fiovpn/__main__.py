from fiovpn.cli.main import main

main()
