"""`kfs completion bash|zsh|fish`: the shell's completion script, from click's own
shell completion, completing commands, options, choices and scenario ids."""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem, get_completion_class

from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import KfsError

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_KFS_COMPLETE"


def complete_scenario_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Every scenario id that starts with what was typed, with its title."""
    try:
        found = scenarios.discover()
    except KfsError:
        return []  # a broken story folder must not break the shell
    return [
        CompletionItem(sid, help=s.meta.title)
        for sid, s in found.items()
        if sid.startswith(incomplete)
    ]


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for kfs (commands, options, scenario ids).

    \b
    bash: eval "$(kfs completion bash)"     (in ~/.bashrc)
    zsh:  eval "$(kfs completion zsh)"      (in ~/.zshrc)
    fish: kfs completion fish > ~/.config/fish/completions/kfs.fish"""
    root = click.get_current_context().find_root()
    cls = get_completion_class(shell)
    assert cls is not None  # every choice is one click knows
    # For the installed `kfs` command, also when this ran as `python -m failure_stories`.
    click.echo(cls(root.command, {}, "kfs", COMPLETE_VAR).source())
