from failure_stories.cli.main import main

main()
