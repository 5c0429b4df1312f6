from para_rpc.cli import main

main()
