from omniopd.cli import main

# Guarded: process pools started from a forkserver or by spawn (math grading, vLLM's
# engine processes) re-import the main module, which must not run the CLI again.
if __name__ == "__main__":
    main()
