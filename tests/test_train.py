"""The training helpers: clipping, SGD and Adam against steps worked out by
hand, truncated BPTT against the unchunked computation, and temperature
sampling against the distribution it should draw from."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fusedrnn


def test_clip_grad_norm_scales_to_the_global_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0], [12.0]])}  # norm 13
    assert fusedrnn.clip_grad_norm(grads, 6.5) == pytest.approx(13.0)
    assert_allclose(grads["a"], [1.5, 0.0])
    assert_allclose(grads["b"], [[2.0], [6.0]])
    assert fusedrnn.clip_grad_norm(grads, 100.0) == pytest.approx(6.5)
    assert_allclose(grads["a"], [1.5, 0.0])  # under the bound: untouched


def test_sgd_with_momentum_by_hand():
    """p = 1, g = 1 then 2, lr 0.1, momentum 0.9: v = 1, p = 0.9; v = 0.9 + 2
    = 2.9, p = 0.9 - 0.29 = 0.61."""
    p = {"w": np.array([1.0])}
    opt = fusedrnn.SGD(p, lr=0.1, momentum=0.9)
    opt.step({"w": np.array([1.0])})
    assert_allclose(p["w"], [0.9])
    opt.step({"w": np.array([2.0])})
    assert_allclose(p["w"], [0.61])


def test_adam_by_hand():
    """lr 0.1, default betas. Step 1, g = 1: m = 0.1, v = 0.001, corrected
    both to 1 and 1: p -= 0.1. Step 2, g = -1: m = 0.09 - 0.1 = -0.01,
    v = 0.000999 + 0.001 = 0.001999; corrected m = -0.01 / 0.19, v = 1:
    p += 0.1 * 0.01 / 0.19 = 0.0052632."""
    p = {"w": np.array([0.5], np.float32)}
    opt = fusedrnn.Adam(p, lr=0.1)
    opt.step({"w": np.array([1.0], np.float32)})
    assert_allclose(p["w"], [0.4], rtol=1e-6)
    opt.step({"w": np.array([-1.0], np.float32)})
    assert_allclose(p["w"], [0.4 + 0.1 * 0.01 / 0.19], rtol=1e-6)
    assert p["w"].dtype == np.float32


@pytest.mark.parametrize("make", [lambda p: fusedrnn.SGD(p, lr=0.05, momentum=0.9),
                                  lambda p: fusedrnn.Adam(p, lr=0.05)], ids=["sgd", "adam"])
def test_optimisers_minimise_a_quadratic(make):
    target = np.array([1.0, -2.0, 3.0])
    p = {"w": np.zeros(3)}
    opt = make(p)
    for _ in range(500):
        opt.step({"w": 2 * (p["w"] - target)})
    assert_allclose(p["w"], target, atol=1e-3)


def test_optimiser_and_clipping_bad_arguments():
    p = {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="^lr: expected a positive number"):
        fusedrnn.SGD(p, lr=0)
    with pytest.raises(ValueError, match=r"^momentum: expected a number in \[0, 1\)"):
        fusedrnn.SGD(p, lr=0.1, momentum=1.5)
    with pytest.raises(ValueError, match=r"^betas\[1\]: expected a number in \[0, 1\)"):
        fusedrnn.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="^betas: expected two numbers"):
        fusedrnn.Adam(p, betas=(0.9,))
    with pytest.raises(ValueError, match="^eps: expected a positive number"):
        fusedrnn.Adam(p, eps=-1)
    with pytest.raises(TypeError, match="^params: expected a non-empty dict"):
        fusedrnn.Adam([np.zeros(2)])
    with pytest.raises(TypeError, match=r"^params\['w'\]: expected a float ndarray"):
        fusedrnn.Adam({"w": [0.0, 1.0]})
    with pytest.raises(ValueError, match=r"^grads: missing keys \['w'\]"):
        fusedrnn.Adam(p).step({})
    with pytest.raises(ValueError, match=r"^grads\['w'\]: expected shape \(2,\), got \(3,\)"):
        fusedrnn.SGD(p, lr=0.1).step({"w": np.zeros(3)})
    with pytest.raises(ValueError, match="^max_norm: expected a positive number"):
        fusedrnn.clip_grad_norm({"w": np.ones(2)}, 0)
    with pytest.raises(TypeError, match="^lr: expected a positive number, got '0.1'"):
        fusedrnn.SGD(p, lr="0.1")
    with pytest.raises(ValueError, match="^lr: expected a positive number, got nan"):
        fusedrnn.SGD(p, lr=float("nan"))
    with pytest.raises(TypeError, match=r"^betas\[0\]: expected a number in \[0, 1\), got None"):
        fusedrnn.Adam(p, betas=(None, 0.9))
    with pytest.raises(ValueError, match="^betas: expected two numbers"):
        fusedrnn.Adam(p, betas=0.9)
    with pytest.raises(TypeError, match="^temperature: expected a positive number, got True"):
        fusedrnn.sample([0.5, 0.5], True)


class Recorder:
    """An optimiser that records the gradients it is given and changes nothing."""

    def __init__(self):
        self.steps = []

    def step(self, grads):
        self.steps.append({k: v.copy() for k, v in grads.items()})


CELLS = ["rnn", "lstm", "gru"]


def assert_same_state(actual, expected, cell, **tolerance):
    """Both halves of an LSTM's state; the one array of the others'."""
    if cell == "lstm":
        assert isinstance(actual, tuple) and len(actual) == 2
    else:
        actual, expected = [actual], [expected]
    for a, e in zip(actual, expected):
        assert_allclose(a, e, **tolerance)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_truncated_bptt_carries_the_state_but_not_its_gradient(batch_first, cell,
                                                              initial_state):
    T, B, D, H, chunk = 7, 2, 3, 4, 3  # chunks of 3, 3 and 1 steps
    net = fusedrnn.ElmanRNN(D, H, 2, batch_first=batch_first, dtype=np.float64, seed=0,
                            cell=cell)
    rng = np.random.default_rng(1)
    seq = (B, T) if batch_first else (T, B)
    x, target = rng.normal(size=(*seq, D)), rng.normal(size=(*seq, 2))
    h0 = initial_state(cell, (1, B, H), rng)
    recorder = Recorder()

    losses, h_n = fusedrnn.truncated_bptt(net, recorder, x, target, chunk, h0)

    # The state is carried: the final state is the unchunked run's.
    _, h_full = net.forward(x, h0)
    assert_same_state(h_n, h_full, cell, rtol=1e-12)
    # Each chunk's loss and gradient are those of that chunk alone, started
    # from the state the previous chunk ended in (a constant: no dh_n).
    h = h0
    assert len(losses) == len(recorder.steps) == 3
    for k, start in enumerate(range(0, T, chunk)):
        steps = slice(start, start + chunk)
        part = (lambda a: a[:, steps]) if batch_first else (lambda a: a[steps])
        _, h_next = net.forward(part(x), h)
        assert losses[k] == pytest.approx(net.loss(part(target)), rel=1e-12)
        net.backward()
        for name, g in net.grads.items():
            assert_allclose(recorder.steps[k][name], g, rtol=1e-12, err_msg=name)
        h = h_next


@pytest.mark.parametrize("cell", CELLS)
def test_truncated_bptt_clips_and_steps(cell):
    net = fusedrnn.ElmanRNN(3, 4, 2, dtype=np.float64, seed=0, cell=cell)
    x, target = np.ones((6, 2, 3)), np.full((6, 2, 2), 50.0)  # large error, large gradients
    recorder = Recorder()
    fusedrnn.truncated_bptt(net, recorder, x, target, 2, max_norm=0.5)
    for grads in recorder.steps:
        assert np.sqrt(sum(np.sum(g ** 2) for g in grads.values())) == pytest.approx(0.5)
    before = net.state_dict()
    fusedrnn.truncated_bptt(net, fusedrnn.SGD(net.params, lr=0.1), x, target, 2)
    assert not np.array_equal(before["weight_hy"], net.params["weight_hy"])
    with pytest.raises(ValueError, match="^chunk: expected a positive integer, got 0"):
        fusedrnn.truncated_bptt(net, recorder, x, target, 0)


def test_truncated_bptt_checks_the_target_before_any_step():
    net = fusedrnn.ElmanRNN(3, 4, 2, dtype=np.float64, seed=0)
    before = net.state_dict()
    opt = fusedrnn.SGD(net.params, lr=0.1)
    with pytest.raises(ValueError, match=r"^target: expected x's time and batch axes \(6, 2\) "
                                         r"first, got shape \(5, 2, 2\)"):
        fusedrnn.truncated_bptt(net, opt, np.ones((6, 2, 3)), np.ones((5, 2, 2)), 2)
    for name, p in net.params.items():
        assert_array_equal(p, before[name])


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimisers_follow_torch(kind):
    """20 steps of random gradients, the same as torch.optim's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p = {"w": rng.normal(size=(3, 4))}
    w = torch.nn.Parameter(torch.tensor(p["w"]))
    if kind == "sgd":
        ours, theirs = fusedrnn.SGD(p, lr=0.1, momentum=0.9), torch.optim.SGD([w], 0.1, 0.9)
    else:
        ours = fusedrnn.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
        theirs = torch.optim.Adam([w], lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    for _ in range(20):
        g = rng.normal(size=(3, 4))
        ours.step({"w": g})
        w.grad = torch.tensor(g)
        theirs.step()
    assert_allclose(p["w"], w.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sample_frequencies_follow_the_tempered_distribution():
    probs = np.array([0.1, 0.2, 0.7, 0.0])
    n = 20000
    for temperature in (1.0, 0.5, 2.0):
        draws = fusedrnn.sample(np.tile(probs, (n, 1)), temperature, rng=0)
        assert draws.shape == (n,) and draws.dtype.kind == "i"
        tempered = probs ** (1 / temperature) / np.sum(probs ** (1 / temperature))
        frequencies = np.bincount(draws, minlength=4) / n
        # 5 standard deviations of a binomial frequency
        assert_allclose(frequencies, tempered, atol=5 * np.sqrt(0.25 / n))
        assert frequencies[3] == 0  # an impossible class stays impossible


def test_sample_cold_is_argmax_and_seeded_is_deterministic():
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=(3, 4))
    assert_array_equal(fusedrnn.sample(probs, 0.01, rng=1), probs.argmax(axis=-1))
    assert_array_equal(fusedrnn.sample(probs, rng=7), fusedrnn.sample(probs, rng=7))


@pytest.mark.parametrize("cell", CELLS)
def test_sampling_one_step_at_a_time_carries_the_state(cell):
    """Generation as examples/char_rnn.py does it: prime, then feed each
    sampled class back as the next one-hot input with the state forward
    returned. The stepwise outputs are those of one forward over the whole
    sampled sequence, for every cell (the LSTM's state is a pair)."""
    V, H, n = 5, 8, 12
    net = fusedrnn.ElmanRNN(V, H, V, num_layers=2, output_activation="softmax",
                            dtype=np.float64, seed=3, cell=cell)
    rng = np.random.default_rng(0)
    inputs = [2]
    y, state = net.forward(np.eye(V)[[[2]]])
    steps = [y[-1]]
    for _ in range(n):
        inputs.append(int(fusedrnn.sample(y[-1, 0], 0.8, rng)))
        y, state = net.forward(np.eye(V)[[[inputs[-1]]]], state)
        steps.append(y[-1])
    assert all(0 <= c < V for c in inputs) and len(set(inputs)) > 1
    y_full, state_full = net.forward(np.eye(V)[np.array(inputs)[:, None]])
    assert_allclose(np.stack(steps), y_full, rtol=1e-12, atol=1e-14)
    assert_same_state(state, state_full, cell, rtol=1e-12, atol=1e-14)


def test_sample_bad_arguments():
    with pytest.raises(ValueError, match="^temperature: expected a positive number"):
        fusedrnn.sample([0.5, 0.5], 0)
    with pytest.raises(ValueError, match="^probs: expected finite, non-negative"):
        fusedrnn.sample([0.5, -0.5])
    with pytest.raises(ValueError, match="^probs: expected finite, non-negative"):
        fusedrnn.sample([[0.5, 0.5], [0.0, 0.0]])
    with pytest.raises(ValueError, match="^probs: expected classes on the last axis"):
        fusedrnn.sample(np.zeros((2, 0)))
