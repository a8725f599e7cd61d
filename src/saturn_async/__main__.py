from saturn_async.cli import main

main()
