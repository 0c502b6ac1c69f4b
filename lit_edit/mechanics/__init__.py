"""What several editors (and causal tracing) do with a model, kept apart from the editors: nothing here imports
:mod:`lit_edit.editors`, so importing a mechanic loads no editor.

* :mod:`~lit_edit.mechanics.hooks`: every forward hook behind a context manager (read, shift, stop a pass);
* :mod:`~lit_edit.mechanics.model_layout`: where a model keeps its blocks and MLPs, and how a weight is stored
  (``nn.Linear`` or GPT-2's ``Conv1D``);
* :mod:`~lit_edit.mechanics.edit_result` and :mod:`~lit_edit.mechanics.edited_model`: what an edit makes, and the
  base model seen through replaced weights (``aligned_logits``, the losses);
* :mod:`~lit_edit.mechanics.key_value`, :mod:`~lit_edit.mechanics.key_statistics`,
  :mod:`~lit_edit.mechanics.target_cache`, :mod:`~lit_edit.mechanics.subject_tokens`: the MLP as a key-value
  memory (ROME, MEMIT), its key statistics C and its searched targets kept for reuse;
* :mod:`~lit_edit.mechanics.prefix_cache`: key/value states of shared prefixes, read once and reused;
* :mod:`~lit_edit.mechanics.lower_blocks`: the frozen blocks below the edited ones, run once per input;
* :mod:`~lit_edit.mechanics.memory`: an edit memory searched in one batched operation (SERAC, the cache);
* :mod:`~lit_edit.mechanics.parameters`, :mod:`~lit_edit.mechanics.schedule`, :mod:`~lit_edit.mechanics.settings`,
  :mod:`~lit_edit.mechanics.activation_checkpointing`: trainable editors' parameters under ZeRO-3, learning-rate
  schedule, range checks of settings, checkpointed blocks;
* :mod:`~lit_edit.mechanics.atomic_files`: files and directories written whole or not at all.

This package imports none of them itself (``lit-edit edit --help`` imports :mod:`~lit_edit.mechanics.atomic_files`
and must not load torch).
"""
