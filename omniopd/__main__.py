from omniopd.cli import main

main()
