"""``litequeue dashboard``: a live web page of a queue, and the JSON endpoints behind it.

:mod:`.api` builds the documents, :mod:`.server` serves them and the files in ``static/``
with the standard library's http.server. The page loads nothing from the network.
"""
