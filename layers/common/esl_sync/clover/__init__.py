"""Clover side of the sync.

Import the modules themselves: this package re-exports nothing, so that reading an error
type or the item model never loads the HTTP client (and httpx) with it.

* :mod:`~esl_sync.clover.client`: the HTTP client (pooling, pacing, retries, typed errors);
* :mod:`~esl_sync.clover.walk`: the keyed page walk over items changed since a time;
* :mod:`~esl_sync.clover.oauth`: the token refresh call; :mod:`~esl_sync.clover.tokens`:
  tokens that refresh themselves safely;
* :mod:`~esl_sync.clover.items`, :mod:`~esl_sync.clover.transform`: the item model and
  item → product; :mod:`~esl_sync.clover.errors`; :mod:`~esl_sync.clover.pacing`.
"""
