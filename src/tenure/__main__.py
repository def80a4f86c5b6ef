from tenure.cli import run

run()
