"""Training: the GAN / auto-decoder trainer and what keeps a run folder trustworthy.

Modules:
  ``step``         one GAN step (``gan_step``), its optimisers, random streams and EMA, shared with ``nfd bench``
  ``trainer``      the ``Trainer`` loop: batches, resume, clean stop on a signal, previews and snapshots
  ``train_cli``    ``nfd train``: the command line of the loop
  ``distributed``  the process group of a multi-process run
  ``checkpoint``   versioned, digested checkpoints and their safe loading
  ``runfolder``    the run-folder lock and what a fresh / resumed run may overwrite
  ``loss_log``     the training-loss log (``metrics.tsv``), written atomically on resume
  ``sweep``        ``nfd sweep``: one preset over several seeds and thread counts
  ``fit_image``    ``nfd fit-image``: one image fitted by one coordinate MLP (Fig. 2)
"""
