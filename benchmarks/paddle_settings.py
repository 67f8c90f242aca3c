"""Paddle's settings: upstream-style, project (the defaults of run_classifier.py), project-bf16 (with
--use_amp --amp_dtype bfloat16) and upstream-cpu-defaults, each measured in its own process; and
what the driver needs from Paddle (the tokenizer, the batches the transformers peer runs, the
matmul peaks)."""

import os
import tempfile
import time
from contextlib import contextmanager, nullcontext
from functools import partial

import numpy as np
import paddle
import paddle.nn.functional as F
from paddlenlp.transformers import AutoTokenizer, ErnieMConfig, ErnieMForSequenceClassification

from benchmarks.common import (
    CPU_DEFAULTS,
    ERNIE_M_VOCABULARY,
    PROJECT_BF16,
    PROJECT_SETTINGS,
    SHAPES,
    evaluation_row,
    file_order_batches,
    matmul_flops,
    packed_tokens,
    padded_tokens,
    process_peak_memory_mb,
    training_row,
)
from ernie_m_xnli.data.batching import ShardedBatchSampler, eval_batches, pad_batch, padded_inputs
from ernie_m_xnli.data.encoding import PairEncoder, encode_pairs
from ernie_m_xnli.data.feature_cache import cache_key, load_features, save_features
from ernie_m_xnli.data.packing import packed_inputs
from ernie_m_xnli.data.synthetic import build_tokenizer
from ernie_m_xnli.data.xnli_files import read_eval_split, read_train_split, xnli_file_paths
from ernie_m_xnli.models import onednn
from ernie_m_xnli.models.cpu_matmuls import BFLOAT16 as BFLOAT16_PRODUCTS
from ernie_m_xnli.models.cpu_matmuls import FLOAT32, ONEDNN_FLOAT32
from ernie_m_xnli.models.families import ERNIE_M, Classifier
from ernie_m_xnli.models.inference import create_predictor, predictor_logits, save_static_graph
from ernie_m_xnli.models.matmul_path import describe_path, linear_shapes, product_rates
from ernie_m_xnli.models.precision import BFLOAT16, Precision, with_float32_products
from ernie_m_xnli.models.training_forward import TrainingForward
from ernie_m_xnli.training.optimization import create_optimizer, linear_schedule
from utils import (
    MKL_CPU_TYPE_VARIABLE,
    PRODUCT_MEASUREMENT_TOKENS,
    XNLI_LANGUAGES,
    cpu_cores_per_process,
    flush_denormals,
    seconds_of,
    set_cpu_threads,
    threads_per_process,
    use_mkl_fast_path_on_amd,
)

# The seed of upstream's random training batches, the same in every setting.
SAMPLER_SEED = 42


@contextmanager
def work_dir(args):
    """--work_dir, made if missing; without it a temporary folder, removed when the benchmark ends."""
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
        yield
        return
    with tempfile.TemporaryDirectory(prefix="ernie-m-benchmark-") as args.work_dir:
        yield


def tokenizer_dir(args):
    return args.model if os.path.isdir(args.model) else os.path.join(args.work_dir, "tokenizer")


def prepare_tokenizer(args):
    """A sentencepiece tokenizer trained on XNLI dev text in `args.work_dir` (unless --model is a directory)."""
    if os.path.isdir(args.model):
        return
    dev = read_eval_split(xnli_file_paths(args.xnli_dir, [])["dev"]).pairs_by_language
    text_file = os.path.join(args.work_dir, "xnli-text.txt")
    with open(text_file, "w", encoding="utf-8") as file:
        file.write("\n".join(text for lang in XNLI_LANGUAGES for pair in dev[lang] for text in pair[:2]))
    build_tokenizer(tokenizer_dir(args), text_file, args.tokenizer_vocab)


def load_tokenizer(args):
    return AutoTokenizer.from_pretrained(tokenizer_dir(args))


def training_epoch(args, tokenizer):
    """(the epoch's batches of token ids, as upstream draws them, and its number of examples)."""
    pairs = read_train_split(xnli_file_paths(args.xnli_dir, ["en"])["train"]).pairs_by_language["en"]
    features = encode_pairs(tokenizer, pairs[: args.train_pairs], args.max_seq_length, 0)
    sampler = ShardedBatchSampler(len(features), args.batch_size, seed=SAMPLER_SEED)
    return [[features.input_ids[i] for i in indices] for indices in sampler], len(features)


def test_pairs(args):
    split = read_eval_split(xnli_file_paths(args.xnli_dir, [])["test"]).pairs_by_language
    return {lang: pairs[: args.test_pairs] for lang, pairs in split.items()}


def write_peer_batches(args, path):
    """The token ids the transformers peer runs: the same training epoch and test inputs (file order)."""
    tokenizer = load_tokenizer(args)
    epoch, num_examples = training_epoch(args, tokenizer)
    test = {lang: encode_pairs(tokenizer, pairs, args.max_seq_length, 0) for lang, pairs in test_pairs(args).items()}
    np.savez(
        path,
        pad_token_id=tokenizer.pad_token_id,
        num_examples=num_examples,
        train_ids=np.concatenate([ids for batch in epoch for ids in batch]),
        train_lengths=[len(ids) for batch in epoch for ids in batch],
        train_batch_sizes=[len(batch) for batch in epoch],
        test_ids=np.concatenate([ids for lang in XNLI_LANGUAGES for ids in test[lang].input_ids]),
        test_lengths=[len(ids) for lang in XNLI_LANGUAGES for ids in test[lang].input_ids],
        test_pairs_per_language=[len(test[lang].input_ids) for lang in XNLI_LANGUAGES],
    )


def measure(args):
    """The JSON row of one of Paddle's settings."""
    paddle.set_device(args.device)
    cpu_defaults = args.setting == CPU_DEFAULTS
    num_threads = 1 if cpu_defaults else threads_per_process(args.cpu_threads)
    flushed = args.flush_denormals and not cpu_defaults
    if args.device == "cpu":
        # Before anything computes: MKL reads its variable at its first call.
        use_mkl_fast_path_on_amd(args.mkl_fast_path_on_amd and not cpu_defaults)
        if flushed:
            flush_denormals()
        set_cpu_threads(num_threads)
    paddle.seed(0)
    tokenizer = load_tokenizer(args)
    if os.path.isdir(args.model):
        model = ErnieMForSequenceClassification.from_pretrained(args.model, num_labels=3)
    else:
        config = ErnieMConfig(vocab_size=ERNIE_M_VOCABULARY, pad_token_id=1, num_labels=3, **SHAPES[args.model])
        model = ErnieMForSequenceClassification(config)
    project = args.setting in PROJECT_SETTINGS
    precision = Precision(args.device, BFLOAT16 if args.setting == PROJECT_BF16 else None)
    if project:  # measured anew in the work folder unless --cpu_matmul names the library
        precision = with_float32_products(precision, model, args.cpu_matmul, num_threads, args.work_dir)
    # Before any predictor runs: a predictor's run leaves its own thread setting behind.
    encoder_products = encoder_product_rates(model, args.setting == PROJECT_BF16, num_threads) if project else {}
    train = measure_training(args, model, tokenizer, precision if project else None)
    if project:
        evaluate = measure_project_evaluation(args, model, tokenizer, num_threads, precision)
    else:
        evaluate = measure_upstream_evaluation(args, model, tokenizer)
    return {
        "setting": args.setting,
        "cpu_threads": num_threads,
        "denormals": "flushed" if flushed else "kept",
        "mkl_cpu_type": os.environ.get(MKL_CPU_TYPE_VARIABLE, "unset"),
        "products": products_used(args, precision if project else None),
        **train,
        **evaluate,
        "non_embedding_parameters": sum(p.size for name, p in model.named_parameters() if "embeddings" not in name),
        "peak_memory_mb": paddle.device.cuda.max_memory_allocated() / 2**20
        if args.device == "gpu"
        else process_peak_memory_mb(),
        "encoder_products": encoder_products,
    }


def products_used(args, project_precision):
    """Which library computed the setting's matrix products in training and in evaluation."""
    if args.device != "cpu":
        return "Paddle's"
    if project_precision is None:
        return "Paddle's MKL"
    if project_precision.cpu_bfloat16:
        kernel = onednn.implementation_name()
        return f"training: oneDNN {onednn.version()} bfloat16 ({kernel}); evaluation: Paddle Inference bfloat16"
    return f"training: {describe_path(project_precision.float32_matmul)}; evaluation: Paddle Inference (oneDNN)"


def encoder_product_rates(model, bfloat16, num_threads):
    """{library: FLOP/s} of the model's Linear layers' three training products (forward and both
    gradients) on 1,024 tokens, on a CPU: MKL's and oneDNN's in float32 and, with `bfloat16`, oneDNN's
    on inputs converted at each call (as training converts them); and Paddle Inference's forward
    products, in the type of the row's evaluation."""
    if paddle.get_device() != "cpu":
        return {}
    shapes = linear_shapes(model)
    matmuls = {"Paddle (MKL) float32": FLOAT32.matmul, f"oneDNN {onednn.version()} float32": ONEDNN_FLOAT32.matmul}
    if bfloat16:
        matmuls[f"oneDNN {onednn.version()} bfloat16"] = BFLOAT16_PRODUCTS.matmul
    rates = product_rates(matmuls, shapes)
    inference = f"Paddle Inference (oneDNN) {'bfloat16' if bfloat16 else 'float32'}, forward only"
    rates[inference] = inference_forward_rate(shapes, num_threads, bfloat16)
    return rates


def inference_forward_rate(shapes, num_threads, bfloat16):
    """FLOP/s of Paddle Inference's products through Linear layers of `shapes` ({(inputs, outputs):
    how many}) on 1,024 tokens: each shape's fastest of two runs after one, counted as often as the
    model has it."""
    seconds = flops = 0.0
    for (inputs, outputs), count in shapes.items():
        predictor = linear_predictor(inputs, outputs, PRODUCT_MEASUREMENT_TOKENS, num_threads, bfloat16)
        predictor.run()
        seconds += count * min(seconds_of(predictor.run) for _ in range(2))
        flops += count * 2 * PRODUCT_MEASUREMENT_TOKENS * inputs * outputs
    set_cpu_threads(num_threads)  # a predictor's run leaves its own thread setting behind
    return flops / seconds


def print_profile(run_batch, batch):
    """Paddle's operator summary of one batch (no trace files)."""
    targets = [paddle.profiler.ProfilerTarget.CPU]
    if paddle.is_compiled_with_cuda():
        targets.append(paddle.profiler.ProfilerTarget.GPU)
    with paddle.profiler.Profiler(targets=targets, on_trace_ready=lambda _: None) as profiler:
        run_batch(batch)
    profiler.summary(
        sorted_by=paddle.profiler.SortedKeys.CPUTotal,
        op_detail=False,
        time_unit="ms",
        views=[paddle.profiler.SummaryView.ModelView, paddle.profiler.SummaryView.OperatorView],
    )


def measure_training(args, model, tokenizer, project_precision):
    """Every setting draws upstream's random batches; the project packs each of them, computes in
    `project_precision` with the Trainer's TrainingForward and releases the gradients after each step
    as its Trainer does."""
    packing = project_precision is not None
    epoch, num_examples = training_epoch(args, tokenizer)
    special_tokens = {"pad_token_id": tokenizer.pad_token_id, "sep_token_id": tokenizer.sep_token_id}
    if packing:
        model_inputs = partial(packed_inputs, **special_tokens, max_length=args.max_seq_length)
        computed_tokens = partial(packed_tokens, max_length=args.max_seq_length)
    else:
        model_inputs, computed_tokens = partial(upstream_inputs, pad_token_id=tokenizer.pad_token_id), padded_tokens
    training_model = Classifier(model, ERNIE_M) if packing else model
    optimizer = create_optimizer(model, ERNIE_M, linear_schedule(5e-5, 10000, 0.1), 0.8, 0.0, 1e-8)
    model.train()
    forward_context = (
        TrainingForward(project_precision, model, ERNIE_M.word_embeddings(model)) if packing else nullcontext
    )

    def training_step(batch):
        inputs = {name: paddle.to_tensor(value) for name, value in model_inputs(batch).items()}
        with forward_context():
            logits = training_model(**inputs)
        F.cross_entropy(logits, paddle.zeros([len(batch)], dtype="int64")).backward()
        optimizer.step()
        optimizer.clear_grad(set_to_zero=not packing)  # the Trainer releases the gradients, upstream zeroes them
        float(logits.sum())  # wait for the device

    profile = print_profile if args.profile else None
    return training_row(training_step, epoch, num_examples, args.train_steps, computed_tokens, profile)


def measure_upstream_evaluation(args, model, tokenizer):
    """Upstream re-tokenizes the 15 test sets at every evaluation (timed) and runs them in file order."""
    pairs = test_pairs(args)
    started = time.perf_counter()
    features = {lang: encode_pairs(tokenizer, pairs[lang], args.max_seq_length, 0) for lang in XNLI_LANGUAGES}
    seconds = {"eval_tokenizing_seconds": time.perf_counter() - started}
    input_ids = {lang: features[lang].input_ids for lang in XNLI_LANGUAGES}
    batches = file_order_batches(input_ids, XNLI_LANGUAGES, args.batch_size)
    profile = print_profile if args.profile else None
    return evaluation_row(dynamic_predict(model, tokenizer), batches, args.eval_batches, seconds, profile)


def measure_project_evaluation(args, model, tokenizer, num_threads, precision):
    """Cached features sorted by length; on a CPU through Paddle Inference, whose export of the
    current weights and predictor creation (done at every evaluation) are timed."""
    # Named by what shapes them: a folder reused with another tokenizer or sample never serves stale features.
    key = cache_key(tokenizer, [xnli_file_paths(args.xnli_dir, [])["test"]], args.max_seq_length, 0)
    cache_file = os.path.join(args.work_dir, f"test-features-{key}-{args.test_pairs}-pairs.npz")
    if not os.path.isfile(cache_file):
        with PairEncoder(tokenizer, args.max_seq_length, 0, cpu_cores_per_process()) as encoder:
            save_features(cache_file, {lang: encoder.encode(pairs) for lang, pairs in test_pairs(args).items()}, 0)
    started = time.perf_counter()
    features, _ = load_features(cache_file)
    seconds = {"eval_tokenizing_seconds": time.perf_counter() - started}
    batches = [
        [features[lang].input_ids[i] for i in indices]
        for lang in XNLI_LANGUAGES
        for indices in eval_batches(features[lang], args.eval_batch_size)
    ]
    profile = print_profile if args.profile else None
    if args.device != "cpu":
        return evaluation_row(dynamic_predict(model, tokenizer), batches, args.eval_batches, seconds, profile)
    classifier = Classifier(model, ERNIE_M)
    classifier.eval()
    with tempfile.TemporaryDirectory(prefix="ernie-m-benchmark-export-") as directory:
        started = time.perf_counter()
        save_static_graph(classifier, os.path.join(directory, "model"))
        seconds["eval_export_seconds"] = time.perf_counter() - started
        predictor = create_predictor(os.path.join(directory, "model"), num_threads, precision.cpu_bfloat16)
        seconds["eval_predictor_seconds"] = time.perf_counter() - started - seconds["eval_export_seconds"]

    def predict(batch):
        predictor_logits(predictor, padded_inputs(batch, tokenizer.pad_token_id, tokenizer.sep_token_id))

    return evaluation_row(predict, batches, args.eval_batches, seconds, profile)


def dynamic_predict(model, tokenizer):
    """The dynamic graph's logits of a batch, in eval mode."""
    model.eval()

    @paddle.no_grad()
    def predict(batch):
        inputs = upstream_inputs(batch, tokenizer.pad_token_id)
        model(**{name: paddle.to_tensor(value) for name, value in inputs.items()}).numpy()

    return predict


def upstream_inputs(batch, pad_token_id):
    """Upstream's model inputs: padded token ids and their mask."""
    input_ids, attention_mask = pad_batch(batch, pad_token_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def matmul_peaks(device, num_threads, bfloat16=False):
    """{library: FLOP/s} of a float32 2048 x 2048 matmul on `num_threads` threads: Paddle's dynamic
    graph (MKL on a CPU) and, on a CPU, Paddle Inference's oneDNN; with `bfloat16`, also the
    bfloat16 products of the project's training (oneDNN) and of Paddle Inference."""
    paddle.set_device(device)
    if device == "cpu":
        set_cpu_threads(num_threads)
    a, b = paddle.randn([2048, 2048]), paddle.randn([2048, 2048])
    peaks = {
        "Paddle matmul (MKL)" if device == "cpu" else "Paddle matmul": matmul_flops(
            lambda: float(paddle.matmul(a, b)[0, 0])
        )
    }
    if bfloat16:  # before any predictor runs: a predictor's run leaves its own thread setting behind
        a16, b16 = onednn.to_bfloat16(a), onednn.to_bfloat16(b)
        peaks[f"oneDNN {onednn.version()} bfloat16 matmul"] = matmul_flops(lambda: onednn.bfloat16_matmul(a16, b16))
    if device == "cpu":
        peaks["Paddle Inference (oneDNN)"] = onednn_matmul_flops(b, num_threads)
    if bfloat16:
        peaks["Paddle Inference bfloat16 (oneDNN)"] = onednn_matmul_flops(b, num_threads, bfloat16=True)
    return peaks


def onednn_matmul_flops(weight, num_threads, bfloat16=False):
    """A 2048 x 2048 matmul as a one-layer static graph run by a Paddle Inference predictor with oneDNN."""
    return matmul_flops(linear_predictor(2048, 2048, 2048, num_threads, bfloat16, weight).run)


def linear_predictor(inputs, outputs, rows, num_threads, bfloat16, weight=None):
    """A Paddle Inference predictor (oneDNN) of a one-layer static graph, rows x inputs -> outputs
    without bias, its input set to random numbers."""
    layer = paddle.nn.Linear(inputs, outputs, bias_attr=False)
    if weight is not None:
        layer.weight.set_value(weight)
    with tempfile.TemporaryDirectory(prefix="ernie-m-benchmark-matmul-") as directory:
        spec = [paddle.static.InputSpec(shape=[rows, inputs], dtype="float32", name="x")]
        paddle.jit.save(paddle.jit.to_static(layer, input_spec=spec, full_graph=True), os.path.join(directory, "mm"))
        predictor = create_predictor(os.path.join(directory, "mm"), num_threads, bfloat16)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.copy_from_cpu(np.random.RandomState(0).randn(rows, inputs).astype(np.float32))
    return predictor


def default_device():
    return "gpu" if paddle.is_compiled_with_cuda() else "cpu"
