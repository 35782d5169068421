"""What-if knobs for serving techniques beyond the single-instance engine (see ``docs/techniques.md``).

* :mod:`scheduler.techniques.cluster` — several engine instances behind a router: live migration
  (Llumnix), preemptible instances (SpotServe), prefill/decode disaggregation (DistServe).
* :mod:`scheduler.techniques.speculative` — speculative decoding speed-up from the predictor (MEDUSA, EAGLE,
  MagicDec).
* :mod:`scheduler.techniques.analysis` — roofline headroom per GPU and the attention-kernel IO model and
  measured efficiency (FlashAttention 1/2/3, FlashInfer).

Engine-level knobs (PagedAttention vs contiguous reservation, per-sequence KV budgets) live in
:class:`scheduler.engine.EngineConfig`; KV quantisation is the ``kv<bits>`` part of the dtype string.
"""
