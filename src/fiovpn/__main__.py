from fiovpn.entry import main

main()
