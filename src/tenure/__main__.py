from tenure.cli import run

if __name__ == "__main__":  # not when a spawned task process imports this module
    run()
