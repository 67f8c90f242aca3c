"""The four encoder families in one harness, and Hugging Face checkpoints in and out.

The fixtures (tests/fixtures/hf, made by make_hf_fixtures.py with transformers 4.46.3 on PyTorch) are
tiny random checkpoints in transformers' layout, with the token ids and logits transformers computes
for a few pairs; two of them order their labels otherwise and spell contradiction as MNLI does.
"""

import hashlib
import json
import os
import shutil
import subprocess

import numpy as np
import paddle
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from ernie_m_xnli.data.batching import padded_inputs
from ernie_m_xnli.data.encoding import encode_pairs
from ernie_m_xnli.data.packing import packed_inputs
from ernie_m_xnli.data.xnli_files import Pair
from ernie_m_xnli.evaluation.evaluator import Evaluator
from ernie_m_xnli.models.families import FAMILIES
from ernie_m_xnli.models.hf_checkpoints import export_hf_checkpoint
from ernie_m_xnli.models.loading import label_order, load_classifier
from ernie_m_xnli.models.tokenizer_files import load_tokenizer, num_token_ids, pair_has_token_types
from ernie_m_xnli.training.optimization import layerwise_lr_ratio
from ernie_m_xnli.training.plain_state import load_weights_file
from utils import LABELS, InputError, has_bfloat16_instructions

from conftest import (
    FAMILY_FIXTURES,
    TOKENIZER_LAYOUT_FIXTURES,
    TRANSFORMERS_PYTHON,
    cpu_run,
    fixture_dir,
    has_peer_packages,
    read_results,
    run_main,
    run_script,
)

FIXTURE_SEQ_LENGTH = 48  # the fixtures hold 64 positions


def reference(model_type):
    with open(os.path.join(fixture_dir(model_type), "reference.json"), encoding="utf-8") as file:
        return json.load(file)


def in_label_order(model_type, logits):
    """transformers' logits with their columns in LABELS' order, by the checkpoint's id2label."""
    with open(os.path.join(fixture_dir(model_type), "config.json"), encoding="utf-8") as file:
        id2label = json.load(file)["id2label"]
    names = [id2label[str(index)].replace("contradictory", "contradiction") for index in range(len(LABELS))]
    return np.asarray(logits)[:, [names.index(label) for label in LABELS]]


def logits_of(classifier, inputs):
    with paddle.no_grad():
        return classifier(**{name: paddle.to_tensor(value) for name, value in inputs.items()}).numpy()


def load(directory, cache_dir="", token_types=None):
    """The fixture's tokenizer and classifier; token types as its tokenizer gives them unless `token_types`."""
    tokenizer = load_tokenizer(directory)
    token_types = pair_has_token_types(tokenizer) if token_types is None else token_types
    classifier = load_classifier(
        directory, 0.1, num_token_ids(tokenizer), FIXTURE_SEQ_LENGTH, str(cache_dir), False, token_types
    )
    classifier.eval()
    return tokenizer, classifier


def file_digests(directory):
    return {
        os.path.relpath(os.path.join(root, name), directory): hashlib.sha256(
            open(os.path.join(root, name), "rb").read()
        ).hexdigest()
        for root, _, names in os.walk(directory)
        for name in names
    }


@pytest.mark.parametrize("model_type", FAMILY_FIXTURES + TOKENIZER_LAYOUT_FIXTURES)
def test_logits_padded_and_packed_equal_transformers(model_type):
    expected = reference(model_type)
    tokenizer, classifier = load(fixture_dir(model_type))
    input_ids = [np.array(ids) for ids in expected["input_ids"]]
    want = in_label_order(model_type, expected["logits"])
    padded = logits_of(classifier, padded_inputs(input_ids, tokenizer.pad_token_id, tokenizer.sep_token_id))
    packed_batch = packed_inputs(input_ids, tokenizer.pad_token_id, tokenizer.sep_token_id, 96)
    assert len(packed_batch["input_ids"]) < len(input_ids)
    np.testing.assert_allclose(padded, want, atol=1e-4)
    np.testing.assert_allclose(logits_of(classifier, packed_batch), want, atol=1e-4)
    if model_type in ("bert", "xlm-roberta"):  # labels in another order: unmapped, the logits would differ
        assert not np.allclose(padded, expected["logits"], atol=1e-2)


@pytest.mark.parametrize("model_type", FAMILY_FIXTURES)
def test_evaluation_computes_the_last_layer_for_the_first_tokens_where_its_layers_allow(model_type):
    """The head reads the first token of each row: outside training, ERNIE-M's and BERT's last layer
    (nn.TransformerEncoderLayer) computes it alone, the logits those of every position's layer."""
    expected = reference(model_type)
    tokenizer, classifier = load(fixture_dir(model_type))
    inputs = padded_inputs([np.array(ids) for ids in expected["input_ids"]], tokenizer.pad_token_id, 2)
    model, family = classifier.model, classifier.family
    encoder = getattr(model, family.encoder).encoder
    last_layer = (getattr(encoder, "layers", None) or encoder.layer)[-1]
    lengths = []

    def record_length(layer, layer_inputs, output):
        lengths.append((output[0] if isinstance(output, tuple) else output).shape[1])

    last_layer.register_forward_post_hook(record_length)
    first_tokens = logits_of(classifier, inputs)
    ids, mask, positions, types = (
        paddle.to_tensor(inputs[name]) if name in inputs else None
        for name in ("input_ids", "attention_mask", "position_ids", "token_type_ids")
    )
    with paddle.no_grad():
        every_position = family.sequence_output(
            model, ids, mask, positions, types if classifier.uses_token_types else None
        )
        full = family.head(model, every_position[:, :1]).numpy()
    assert lengths[0] == (1 if model_type in ("ernie_m", "bert") else inputs["input_ids"].shape[1])
    assert lengths[1] == inputs["input_ids"].shape[1]
    np.testing.assert_allclose(first_tokens, full, rtol=1e-5, atol=1e-6)


def test_a_bert_with_xlm_roberta_tokenizer_gets_type_0_everywhere_as_in_transformers():
    # multilingual-e5 and Multilingual-MiniLM: BERT's two token types, XLM-R's tokenizer, which gives none.
    name = "bert-with-xlm-roberta-tokenizer"
    expected = reference(name)
    tokenizer, classifier = load(fixture_dir(name))
    assert not pair_has_token_types(tokenizer) and not classifier.uses_token_types
    input_ids = [np.array(ids) for ids in expected["input_ids"]]
    padded_batch = padded_inputs(input_ids, tokenizer.pad_token_id, tokenizer.sep_token_id)
    packed_batch = packed_inputs(input_ids, tokenizer.pad_token_id, tokenizer.sep_token_id, 96)
    # A random model's logits are ~1e-3 and type 1 moves them by ~1e-4; the suite matches to ~1e-8.
    np.testing.assert_allclose(logits_of(classifier, padded_batch), expected["logits"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(logits_of(classifier, packed_batch), expected["logits"], rtol=0, atol=1e-6)
    _, with_types = load(fixture_dir(name), token_types=True)  # the hypothesis as type 1: other logits
    assert not np.allclose(logits_of(with_types, padded_batch), expected["logits"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "model_type", ["bert", "xlm-roberta", "deberta-v2", "bert-with-xlm-roberta-tokenizer", *TOKENIZER_LAYOUT_FIXTURES]
)
def test_tokenization_equals_transformers(model_type):
    # ERNIE-M is left out on purpose: transformers' port of its tokenizer splits some text otherwise
    # than PaddleNLP's, the original, which the suite keeps.
    expected = reference(model_type)
    tokenizer = load_tokenizer(fixture_dir(model_type))
    pairs = [Pair(premise, hypothesis, 0) for premise, hypothesis in expected["pairs"]]
    features = encode_pairs(tokenizer, pairs, FIXTURE_SEQ_LENGTH, 0)
    assert [ids.tolist() for ids in features.input_ids] == expected["input_ids"]


@pytest.mark.parametrize("model_type", FAMILY_FIXTURES)
def test_export_then_import_gives_the_same_logits_and_transformers_names(tmp_path, model_type):
    tokenizer, classifier = load(fixture_dir(model_type))
    export_hf_checkpoint(classifier.model, classifier.family, tokenizer, tmp_path / "exported")
    exported_tokenizer, imported = load(tmp_path / "exported")
    inputs = padded_inputs(
        [np.array(ids) for ids in reference(model_type)["input_ids"]], tokenizer.pad_token_id, tokenizer.sep_token_id
    )
    np.testing.assert_allclose(logits_of(imported, inputs), logits_of(classifier, inputs), atol=1e-6)
    assert exported_tokenizer.get_vocab() == tokenizer.get_vocab()
    source = load_file(os.path.join(fixture_dir(model_type), "model.safetensors"))
    exported = load_file(tmp_path / "exported" / "model.safetensors")
    assert exported.keys() == {name for name in source if not name.endswith("position_ids")}
    for name, array in exported.items():
        assert array.shape == source[name].shape, name
    with safe_open(tmp_path / "exported" / "model.safetensors", "np") as file:
        assert file.metadata() == {"format": "pt"}  # what transformers requires of a safetensors file
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config["id2label"] == {str(index): label for index, label in enumerate(LABELS)}
    assert config["model_type"] == model_type and "paddlenlp_version" not in config


TRANSFORMERS_LOADS_EXPORT = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
directory, expected = sys.argv[1], json.load(open(sys.argv[2]))
tokenizer = AutoTokenizer.from_pretrained(directory)
model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
encoded = tokenizer(*map(list, zip(*expected["pairs"])), padding=True, return_tensors="pt", return_attention_mask=True)
with torch.no_grad():
    logits = model(**encoded).logits
print(json.dumps({"logits": logits.tolist(), "id2label": model.config.id2label}))
"""


@pytest.mark.skipif(
    not has_peer_packages(TRANSFORMERS_PYTHON),
    reason=f"{TRANSFORMERS_PYTHON} has no torch and transformers: set TRANSFORMERS_PYTHON to a Python that has them",
)
@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta", "deberta-v2", *TOKENIZER_LAYOUT_FIXTURES])
def test_transformers_loads_an_export_and_computes_the_same_logits(tmp_path, model_type):
    # (ERNIE-M loads too, but transformers' port of its tokenizer splits these pairs otherwise.)
    tokenizer, classifier = load(fixture_dir(model_type))
    export_hf_checkpoint(classifier.model, classifier.family, tokenizer, tmp_path / "exported")
    expected = reference(model_type)
    (tmp_path / "reference.json").write_text(json.dumps(expected))
    done = subprocess.run(
        [TRANSFORMERS_PYTHON, "-c", TRANSFORMERS_LOADS_EXPORT, tmp_path / "exported", tmp_path / "reference.json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["id2label"] == {str(index): label for index, label in enumerate(LABELS)}
    np.testing.assert_allclose(loaded["logits"], in_label_order(model_type, expected["logits"]), atol=1e-4)


@pytest.mark.parametrize("model_type", FAMILY_FIXTURES)
def test_paddle_inference_evaluation_equals_the_dynamic_graph(model_type):
    tokenizer, classifier = load(fixture_dir(model_type))
    pairs = [Pair(premise, hypothesis, 0) for premise, hypothesis in reference(model_type)["pairs"]]
    features = encode_pairs(tokenizer, pairs, FIXTURE_SEQ_LENGTH, 0)
    logits = {}
    for backend in ("dynamic", "inference"):
        evaluator = Evaluator(classifier, 2, tokenizer.pad_token_id, tokenizer.sep_token_id, backend=backend)
        logits[backend] = evaluator.predict_logits(features)
        # XLM-RoBERTa and DeBERTa-v2 cannot be traced: evaluated with the dynamic graph, never hanging.
        assert evaluator.backend == ("dynamic" if model_type in ("xlm-roberta", "deberta-v2") else backend)
    np.testing.assert_allclose(logits["inference"], logits["dynamic"], atol=1e-5)


@pytest.mark.parametrize("model_type", FAMILY_FIXTURES)
def test_layerwise_decay_follows_each_familys_layers(model_type):
    _, classifier = load(fixture_dir(model_type))
    family, num_layers = classifier.family, classifier.model.config.num_hidden_layers
    ratios = {
        name: layerwise_lr_ratio(family, name, num_layers, 0.5) for name, _ in classifier.model.named_parameters()
    }
    for name, ratio in ratios.items():
        layer = family.layer_index(name)
        if layer is not None:
            assert f"{layer}." in name and ratio == 0.5 ** (num_layers - layer), name
        elif "embeddings" in name:
            assert ratio == 0.5 ** (num_layers + 1), name
    # Outside the layers and embeddings, only the head (pooler, classifier) and DeBERTa's
    # relative-position LayerNorm, which belongs with the embeddings.
    full_rate = {name.split(".weight")[0].split(".bias")[0] for name, ratio in ratios.items() if ratio == 1.0}
    assert all("pooler" in name or "classifier" in name for name in full_rate), full_rate
    assert sorted(set(ratios.values())) == [0.5**k for k in range(num_layers + 1, -1, -1)]
    if model_type == "deberta-v2":
        assert ratios["deberta.encoder.LayerNorm.weight"] == ratios["deberta.encoder.rel_embeddings.weight"] == 0.125


def test_a_checkpoints_labels_map_by_name_in_any_order():
    config = {"id2label": {"0": "Contradictory", "1": "entailment", "2": "neutral"}}
    assert label_order(config, "x") == [1, 2, 0]  # LABELS: entailment, neutral, contradiction
    assert label_order({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}, "x") is None
    with pytest.raises(InputError, match="its classifier's labels \\(positive, negative, neutral\\) are not XNLI's"):
        label_order({"id2label": {"0": "positive", "1": "negative", "2": "neutral"}}, "x")


def test_a_hugging_face_run_trains_caches_its_conversion_and_leaves_the_source_untouched(tmp_path, xnli_dir):
    """Train the BERT fixture (labels in another order) end to end, export it in transformers'
    layout and predict with the export: the source directory stays byte-identical, the conversion
    is cached as safetensors and read again by the next run, and nothing is pickled."""
    source = tmp_path / "bert"
    shutil.copytree(fixture_dir("bert"), source)
    before = file_digests(source)
    options = dict(max_seq_length=FIXTURE_SEQ_LENGTH, max_steps=3, batch_size=8, cache_dir=tmp_path / "cache")
    run = run_main(**cpu_run(source, xnli_dir, tmp_path / "run", export_hf_dir=tmp_path / "hf-out", **options))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "converted from transformers' layout" in run.stderr
    assert file_digests(source) == before
    (converted,) = (tmp_path / "cache" / "converted").iterdir()
    assert sorted(os.listdir(converted)) == ["config.json", "model.safetensors"]
    pickles = [path for path in tmp_path.rglob("*") if path.suffix in (".pdparams", ".pdopt", ".pkl", ".bin")]
    assert pickles == []

    again = run_main(**cpu_run(source, xnli_dir, tmp_path / "run2", eval_only=True, **options))
    assert again.returncode == 0 and "converted weights from the cache" in again.stderr, again.stderr[-3000:]

    (tmp_path / "pairs.tsv").write_text("the cat sat\ta cat\nel gato\tthe dog ran\n", encoding="utf-8")
    predicted = run_main(
        **cpu_run(tmp_path / "hf-out", xnli_dir, tmp_path / "predict", predict_file=tmp_path / "pairs.tsv", **options)
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = (tmp_path / "predict" / "predictions.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and all(row.split("\t")[2] in LABELS for row in rows[1:])


@pytest.mark.parametrize(
    "precision",
    [
        pytest.param({}, id="float32"),
        pytest.param(
            {"use_amp": "true", "amp_dtype": "bfloat16"},
            id="bfloat16",
            marks=pytest.mark.skipif(not has_bfloat16_instructions(), reason="this CPU lacks avx512_bf16"),
        ),
    ],
)
@pytest.mark.parametrize("model_type", FAMILY_FIXTURES)
def test_every_family_trains_and_resumes_to_identical_weights(tmp_path, xnli_dir, model_type, precision):
    # (dropout on: the resumed run must also continue the random state of each family's dropout)
    options = dict(
        max_seq_length=FIXTURE_SEQ_LENGTH, batch_size=8, max_steps=4, save_steps=2, cache_dir="", **precision
    )
    straight = run_main(**cpu_run(fixture_dir(model_type), xnli_dir, tmp_path / "straight", **options))
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert f"computing in {precision.get('amp_dtype', 'float32')}" in straight.stderr
    resumed = run_main(
        **cpu_run(
            fixture_dir(model_type),
            xnli_dir,
            tmp_path / "resumed",
            resume_from_checkpoint=tmp_path / "straight" / "checkpoint-2",
            **options,
        )
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_weights_file(tmp_path / "straight" / "checkpoint-4")
    actual = load_weights_file(tmp_path / "resumed" / "checkpoint-4")
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


@pytest.mark.parametrize("layout", TOKENIZER_LAYOUT_FIXTURES)
def test_every_tokenizer_layout_trains_evaluates_its_checkpoint_and_exports(tmp_path, xnli_dir, layout):
    options = dict(max_seq_length=FIXTURE_SEQ_LENGTH, batch_size=8, max_steps=2, cache_dir="", disable_tqdm=True)
    trained = run_main(
        **cpu_run(fixture_dir(layout), xnli_dir, tmp_path / "run", export_hf_dir=tmp_path / "hf", **options)
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = read_results(tmp_path / "run")
    evaluated = run_main("--eval_only", **cpu_run(results["checkpoint"], xnli_dir, tmp_path / "eval", **options))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert read_results(tmp_path / "eval")["test_accuracy"] == results["test_accuracy"]
    pairs = [Pair(premise, hypothesis, 0) for premise, hypothesis in reference(layout)["pairs"]]
    for directory in (results["checkpoint"], tmp_path / "hf"):
        features = encode_pairs(load_tokenizer(str(directory)), pairs, FIXTURE_SEQ_LENGTH, 0)
        assert [ids.tolist() for ids in features.input_ids] == reference(layout)["input_ids"], directory


def test_two_processes_train_another_family_like_one_with_their_joint_batch(tmp_path, xnli_dir):
    """BERT (token types, Paddle Inference evaluation) under paddle.distributed.launch: 2 processes x 4
    examples per step end where 1 process x 8 does (every dropout off: ranks draw their own masks)."""
    model_dir = tmp_path / "bert"
    shutil.copytree(fixture_dir("bert"), model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (model_dir / "config.json").write_text(json.dumps({**config, **no_dropout}))
    options = dict(max_seq_length=FIXTURE_SEQ_LENGTH, max_steps=4, save_steps=4, dropout=0, cache_dir="")
    launcher = ["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", tmp_path / "logs"]
    two = run_script(**cpu_run(model_dir, xnli_dir, tmp_path / "two", batch_size=4, **options), launcher=launcher)
    assert two.returncode == 0, (tmp_path / "logs" / "workerlog.0").read_text()[-3000:]
    one = run_main(**cpu_run(model_dir, xnli_dir, tmp_path / "one", batch_size=8, **options))
    assert one.returncode == 0, one.stderr[-3000:]
    expected = load_weights_file(tmp_path / "one" / "checkpoint-4")
    actual = load_weights_file(tmp_path / "two" / "checkpoint-4")
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def write_hf_dir(directory, config, weights=("model.safetensors",)):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as file:
        json.dump({"transformers_version": "4.46.3", **config}, file)
    for name in weights:
        shutil.copy(os.path.join(fixture_dir("bert"), "model.safetensors"), os.path.join(directory, name))


@pytest.mark.parametrize(
    "config, weights, message",
    [
        (
            {"model_type": "gpt2"},
            ("model.safetensors",),
            "model_type 'gpt2' is not a family this suite fine-tunes: ERNIE-M (ernie_m), BERT (bert), "
            "XLM-RoBERTa (xlm-roberta), DeBERTa-v2 (deberta-v2)",
        ),
        (
            {"model_type": "bert", "hidden_size": 32},
            ("pytorch_model.bin",),
            "pytorch_model.bin is a PyTorch pickle, which this suite does not read; convert it to model.safetensors "
            "first (transformers: model.save_pretrained(dir, safe_serialization=True))",
        ),
        (
            {"model_type": "ernie_m", "hidden_size": 32, "intermediate_size": 37},
            ("model.safetensors",),
            "intermediate_size 37 is not 4 x hidden_size (32), the only feed-forward size PaddleNLP's ErnieM builds",
        ),
    ],
)
def test_a_checkpoint_the_suite_cannot_fine_tune_is_refused_in_one_line(tmp_path, xnli_dir, config, weights, message):
    directory = tmp_path / "model"
    write_hf_dir(directory, config, weights)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(fixture_dir("bert"), name), directory)
    run = run_main(**cpu_run(directory, xnli_dir, tmp_path / "run"))
    assert run.returncode == 2
    expected = f"run_classifier.py: error: --model_name_or_path {directory}: {message}"
    assert run.stderr.strip().splitlines()[-1] == expected


def test_an_export_for_paddle_inference_of_xlm_roberta_is_refused_before_training(tmp_path, xnli_dir):
    options = dict(max_seq_length=FIXTURE_SEQ_LENGTH, export_model_dir=tmp_path / "inference")
    run = run_main(**cpu_run(fixture_dir("xlm-roberta"), xnli_dir, tmp_path / "run", **options))
    assert run.returncode == 2 and not (tmp_path / "run").exists()
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("run_classifier.py: error: --export_model_dir: not for XLM-RoBERTa: Paddle 3.3.1 cannot trace")
    )


def test_the_paper_recipe_is_refused_for_another_family(tmp_path):
    run = run_main(**cpu_run(fixture_dir("xlm-roberta"), tmp_path, tmp_path / "run", recipe="paper"))
    assert run.returncode == 2
    assert "the recipe is the ERNIE-M paper's" in run.stderr.strip().splitlines()[-1]
    assert "xlm-roberta model" in run.stderr


def test_every_family_is_named_once():
    assert [family.model_type for family in FAMILIES] == list(FAMILY_FIXTURES)


@pytest.mark.parametrize("model_type", FAMILY_FIXTURES)
def test_memory_length_windows_are_the_familys_pair_inputs(model_type):
    tokenizer = load_tokenizer(fixture_dir(model_type))
    premise, hypothesis = reference(model_type)["pairs"][2]
    features = encode_pairs(tokenizer, [Pair(premise, hypothesis, 0)], 24, memory_length=8)
    hypothesis_ids = tokenizer(hypothesis, add_special_tokens=False)["input_ids"]
    assert len(features.input_ids) > 1
    for window in features.input_ids:
        assert len(window) <= 24 and window[0] == tokenizer.cls_token_id and window[-1] == tokenizer.sep_token_id
        # the hypothesis whole after the premise window, as the tokenizer lays out a pair
        assert window[len(window) - 1 - len(hypothesis_ids) : -1].tolist() == hypothesis_ids


def test_linear_weights_are_told_from_embedding_tables_by_the_familys_tables():
    bert, deberta = (next(f for f in FAMILIES if f.model_type == name) for name in ("bert", "deberta-v2"))
    matrix = np.zeros((4, 8))
    # ELECTRA-like: a Linear whose name says "embeddings" is transposed like any Linear.
    assert bert.is_linear_weight("bert.embeddings_project.weight", matrix)
    assert bert.is_linear_weight("bert.encoder.layers.0.linear1.weight", matrix)
    assert not bert.is_linear_weight("bert.embeddings.word_embeddings.weight", matrix)
    assert not bert.is_linear_weight("bert.embeddings.token_type_embeddings.weight", matrix)
    assert not deberta.is_linear_weight("deberta.encoder.rel_embeddings.weight", matrix)
    assert not bert.is_linear_weight("bert.embeddings.layer_norm.weight", np.zeros(8))
