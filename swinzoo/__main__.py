from swinzoo.cli import main

main()
