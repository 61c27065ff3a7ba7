"""Signals of an item besides its hashes, each a number by name in the results' `signals`, for
policy rules to read (see `policy.rules`):

- numeric columns of the input (`--signals punsafe`: `sources.base.numeric_signals`);
- `optout_in_file`: the bytes say not to train on them (`optout`), recorded for every image;
- `nsfw`: an image classifier's score (`nsfw`, the `safeset[nsfw]` extra), when asked for.
"""
