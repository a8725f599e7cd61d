"""``saturn fetch URL DIR``: download what ``split`` shipped to S3 onto this machine."""

from __future__ import annotations

import os

import anyio
import click

from saturn_async.split_ship import fetch as fetch_shipped


@click.command()
@click.argument("url", metavar="URL")
@click.argument("directory", metavar="DIR")
def fetch(url: str, directory: str) -> None:
    """Download the batch files (N.json) and --sync tarballs directly under URL into DIR.

    URL is the --remote-commands-directory of `saturn split`; the start_script of the
    recipe split writes runs this when the aws CLI is missing. DIR is created if missing.
    A file of one of those names already in DIR is replaced only if saturn wrote it (DIR's
    .saturn-split lists it), else refused (exit 2) before anything is downloaded.
    """
    names = anyio.run(fetch_shipped, url, os.path.abspath(directory))
    click.echo(f"fetched {len(names)} {'file' if len(names) == 1 else 'files'} to {directory}")
