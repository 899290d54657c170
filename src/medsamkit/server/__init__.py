"""medsamkit.server: the interactive web app behind ``medsamkit serve``.

A thin HTTP layer over :mod:`medsamkit.inference.session`: it adds uploads, per-user sessions,
an embedding cache bounded in bytes, propagation jobs that stream their progress, and the
static page (``static/``). It holds no segmentation or interaction logic of its own.

Modules: :mod:`.config` (options), :mod:`.app` (the app factory), :mod:`.security` (token, host
and origin checks, session ids, paths under ``--data``), :mod:`.uploads` (reading uploads and
files), :mod:`.engine` (the one model, its lock and the embedding cache), :mod:`.store`
(sessions and their expiry), :mod:`.jobs` (propagation in a worker thread), and the routes.
Importing this package imports nothing heavy.
"""
