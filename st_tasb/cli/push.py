"""``st-tasb push``: upload a trained model folder to the Hugging Face Hub, or write what would be uploaded."""

from __future__ import annotations

from dataclasses import dataclass

from st_tasb.cli.options import Command, option


@dataclass
class PushArguments:
    """Options of ``st-tasb push``."""

    model: str = option(help="the trained model folder (st-tasb train or demo output)")
    repo_id: str = option(help="target repository on the Hub, user/name or organisation/name (created if needed)")
    dry_run: str | None = option(
        None, help="upload nothing: write the files exactly as they would be uploaded into this new folder", metavar="DIR"
    )
    private: bool = option(False, help="create the repository as private")
    revision: str | None = option(None, help="branch to commit to (default: main)")
    commit_message: str = option("Upload TAS-Balanced model trained with st-tasb", help="commit message")
    token: str | None = option(None, help="Hub token (default: the saved login or the HF_TOKEN variable)")


def run(args: PushArguments) -> int:
    """Push (or dry-run) and list the files."""
    from st_tasb.data.files import check_output
    from st_tasb.publish.hub import push_to_hub

    if args.dry_run is not None:  # before the work; push_to_hub refuses a folder that is not empty
        check_output(args.dry_run, "--dry-run")
    result = push_to_hub(
        args.model, args.repo_id, private=args.private, token=args.token, revision=args.revision,
        commit_message=args.commit_message, dry_run_dir=args.dry_run,
    )
    where = f"written to {result.dry_run_dir} (dry run, nothing uploaded)" if result.dry_run_dir else f"uploaded: {result.commit_url}"
    print(f"{len(result.files)} file(s) for {result.repo_id} {where}")
    for name in result.files:
        print(f"  {name}")
    return 0


COMMAND = Command(
    name="push",
    description=(
        "Upload a trained model folder to the Hub in one commit: every file except git/cache files and training\n"
        "checkpoints, with the model card's usage snippet pointed at the repository. The local folder is only read,\n"
        "so a failed upload leaves it unchanged.\n\n"
        "examples:\n"
        "  st-tasb push --model demo-output/model --repo-id me/minilm-tasb-scifact --dry-run upload-preview\n"
        "  st-tasb push --model demo-output/model --repo-id me/minilm-tasb-scifact"
    ),
    arguments=PushArguments,
    run=run,
)
