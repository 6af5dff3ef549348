from failure_stories.cli import main

main()
