"""infomax_study: issue 21.4, S3 against each InfoMax baseline on the synthetic variants, 5 seeds.

Command:  python run_grid.py --preset infomax_study --synthetic variant=localized \
              --experiment s3-infomax-localized --report-dir report-infomax-localized
          (then variant=nuisance --experiment s3-infomax-nuisance, and variant=entangled
          --experiment s3-infomax-entangled); `python -m orchestrator.report --experiment ...`
          gives the paired S3-minus-each 95% intervals (one row per baseline) for docs/RESULTS.md.
          The second half of 21.4 (ours against the authors' code on their own synthetic task) is
          scripts/disentangled_synthetic.py, not this preset.
Runtime:  per seed 8 trials (S3 at chi 4; the no-Selection ablation at chi 4; CLIP-style; DisentangledSSL,
          JointOpt, FOCAL, FactorCL-SSL (critics 64 wide); the raw-feature probe), 40 per variant.
          Not measured at these settings. Measured only at smoke size (plumbing): `--synthetic
          variant=localized n_train=200 n_valid=100 n_test=100 --seeds 0 1 --set epochs_special=1
          epochs_select=1 d_model=16 d_ff=32 n_heads=2 proj_dim=16 --num-cpus 1` ran the 16 trials in
          54 s wall on the shared 2-core machine (1-5 s per trial), which says nothing about full size.
          Sizing: an S3 trial at chi 4, epochs 3 + 2 on these variants took 66-80 s with two trials at
          once on the otherwise idle 2-core machine (the fair_chance search, docs/RESULTS.md); the dense
          baselines cost less per epoch, FactorCL at width 64 about 3x CLIP (0.141 vs 0.042 s per batch of
          128 on the `base` variant, one thread): roughly 30-45 minutes per variant, not measured.
Expected: written before any run, from the mechanism (s3core/data/synthetic.py, s3core/methods.py):
          the InfoMax methods learn a shared part (InfoNCE across modalities) and a private part per
          modality (InfoNCE between augmented views of one modality), densely, no step selected. The
          variants' label is 'mixed' (Z_s and Z_1, nonlinear 0.5): a shared and a private factor, which
          an InfoMax embedding keeps in principle and a CLIP-style one only half, so the InfoMax rows
          are expected at or above clip. 'nuisance': high-variance N_s (shared: their shared part is
          rewarded for it) and N_m (unique: their private parts are) at every step; but its own random
          map lets a linear probe project it away (the raw probe scores about the same on 'clean'),
          so S3 minus each is expected near 0. 'localized': 40 of 50 steps carry nuisance only and
          their mean pooling mixes them in; S3 gains only if Selection drops those steps, and the
          evidence study found little to gain there: small or no difference expected. 'entangled':
          the 40 non-event steps carry distractors through the relevant content's own map (D_s shared
          by the modalities, so cross-modal InfoNCE keeps it), which no projection removes and only
          dropping steps can (input-masking headroom +9 points, seed 0, search_spaces/fair_chance.py):
          S3 minus each positive if and only if Selection finds the event steps. FactorCL's
          conditional terms need label-preserving augmentations; ours are generic. A difference whose
          interval covers 0 is reported as such.
Fixed for cost, before any result, never tuned on results: the `evidence` preset's cost settings,
          epochs 3 + 2 (the dense baselines train 5, the same budget), epoch_probe off, 6 keep-ratios
          from 1.0 to 0.1, FactorCL's critics 64 wide (authors' 512; 4.2 s per batch at 512 on one
          CPU thread, docs/METHOD_NOTES.md); S3 at chi 4 only (the evidence study's middle chi).
"""

from s3core.methods import methods_of_family


def get_preset() -> dict:
    return {
        "name": "infomax_study",
        "benchmarks": ["synthetic"],
        "synthetic": {"variant": "localized"},
        "base": {"epochs_special": 3, "epochs_select": 2, "epoch_probe": False, "chi": 4,
                 "keep_ratios": [1.0, 0.8, 0.6, 0.4, 0.2, 0.1], "factorcl_critic_hidden": 64},
        "grid": {},
        "seeds": [0, 1, 2, 3, 4],
        "baselines": ["s3_no_select", "clip", *methods_of_family("infomax"), "raw_probe"],
        "search": None,
    }
