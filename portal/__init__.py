"""The portal (数据运营门户): server-rendered pages for source units, reviewers, operators,
admins and the public, over the same core functions as the CLI (``shuyu serve``)."""
