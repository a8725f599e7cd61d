from saturn_async.cli import main

# Guarded: multiprocessing's spawn and forkserver import this module again in workers.
if __name__ == "__main__":
    main()
