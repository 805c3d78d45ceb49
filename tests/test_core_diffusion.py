import math

import pytest
import torch

from concept_core.diffusion import (
    PREDICTION_TYPES,
    SCHEDULES,
    DDIMScheduler,
    classifier_free_guidance,
    make_alphas_cumprod,
    rescale_zero_terminal_snr,
)

T = 100
D = 8


def data(shape=(4, D), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def oracle(scheduler: DDIMScheduler, x0: torch.Tensor):
    """The perfect model: the output implied by the current sample and the true x0."""

    def predict(sample: torch.Tensor, t: int) -> torch.Tensor:
        a = scheduler.alphas_cumprod[t].double()
        eps = (sample.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
        out = {"sample": x0.double(), "epsilon": eps,
               "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0.double()}[scheduler.prediction_type]
        return out.to(sample.dtype)

    return predict


def sample_loop(scheduler: DDIMScheduler, predict, steps: int, noise: torch.Tensor, **step_kwargs) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    x = noise
    for t in scheduler.timesteps:
        x = scheduler.step(predict(x, int(t)), t, x, **step_kwargs).prev_sample
    return x


# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("num_steps", [10, 100, 1000])
def test_schedule_is_strictly_decreasing_in_range(schedule, num_steps):
    a = make_alphas_cumprod(schedule, num_steps)
    assert a.dtype == torch.float64 and a.shape == (num_steps,)
    assert (a.diff() < 0).all()
    assert (a > 0).all() and (a <= 1).all()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_zero_terminal_snr_ends_at_zero_and_keeps_the_first(schedule):
    plain = make_alphas_cumprod(schedule, T)
    zsnr = make_alphas_cumprod(schedule, T, zero_terminal_snr=True)
    assert plain[-1] > 0
    assert zsnr[-1] == 0
    assert zsnr[0] == plain[0]
    assert (zsnr.diff() < 0).all() and (zsnr[:-1] > 0).all()
    torch.testing.assert_close(rescale_zero_terminal_snr(plain), zsnr, rtol=0, atol=0)


def test_rescale_is_affine_in_sqrt_alpha_bar():
    a = make_alphas_cumprod("linear", T)
    r = rescale_zero_terminal_snr(a)
    root, new = a.sqrt(), r.sqrt()
    expected = (root - root[-1]) * root[0] / (root[0] - root[-1])
    torch.testing.assert_close(new, expected, rtol=1e-12, atol=1e-15)


def test_cosine_matches_the_closed_form():
    # with betas uncapped, ᾱ_t = f((t+1)/T) / f(0) for f(u) = cos²((u + s)/(1 + s)·π/2)
    a = make_alphas_cumprod("cosine", T)
    u = torch.arange(1, T + 1, dtype=torch.float64) / T
    f = torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(a[:-1], f[:-1], rtol=1e-10, atol=1e-12)


def test_sigmoid_matches_its_log_snr_and_parameters_change_it():
    a = make_alphas_cumprod("sigmoid", T, sigmoid_alpha=1.5, sigmoid_beta=0.0)
    u = torch.arange(1, T, dtype=torch.float64) / T  # (T-1,): the last beta is capped
    torch.testing.assert_close(a[:-1], torch.sigmoid(-1.5 * torch.logit(u)), rtol=1e-10, atol=1e-12)
    assert a[T // 2 - 1] == pytest.approx(0.5)  # ᾱ(1/2) = sigmoid(β)
    steeper = make_alphas_cumprod("sigmoid", T, sigmoid_alpha=3.0)
    shifted = make_alphas_cumprod("sigmoid", T, sigmoid_beta=2.0)
    quarter = T // 4 - 1  # u = 1/4: log SNR = β + α·log 3
    assert steeper[quarter] > a[quarter] + 0.05
    assert shifted[T // 2 - 1] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert (shifted[:-1] > a[:-1]).all()  # β > 0: more signal everywhere


def test_quadratic_is_squared_linear_in_sqrt_beta():
    a = make_alphas_cumprod("quadratic", T, beta_start=1e-4, beta_end=0.02)
    betas = torch.linspace(1e-2, 0.02**0.5, T, dtype=torch.float64) ** 2
    torch.testing.assert_close(a, torch.cumprod(1 - betas, 0))


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        make_alphas_cumprod("exp", T)
    with pytest.raises(ValueError, match="at least 2"):
        make_alphas_cumprod("cosine", 1)
    with pytest.raises(ValueError, match="sigmoid_alpha"):
        make_alphas_cumprod("sigmoid", T, sigmoid_alpha=0.0)
    with pytest.raises(ValueError, match="beta_start"):
        make_alphas_cumprod("linear", T, beta_start=0.1, beta_end=0.01)


# --- timesteps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("num_train", [10, 100, 1000])
def test_trailing_timesteps(num_train):
    scheduler = DDIMScheduler(num_train)
    for steps in range(1, num_train + 1):
        scheduler.set_timesteps(steps)
        ts = scheduler.timesteps
        assert ts.dtype == torch.long and len(ts) == steps
        assert ts[0] == num_train - 1
        assert (ts.diff() < 0).all() and ts[-1] >= 0
    scheduler.set_timesteps(num_train)
    assert torch.equal(scheduler.timesteps, torch.arange(num_train - 1, -1, -1))


def test_trailing_matches_diffusers_example():
    scheduler = DDIMScheduler(1000)
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]


def test_previous_timestep_walks_the_schedule():
    scheduler = DDIMScheduler(T)
    scheduler.set_timesteps(4)
    ts = scheduler.timesteps.tolist()
    assert [scheduler.previous_timestep(t) for t in ts] == ts[1:] + [-1]


# --- noising and conversions -------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("zero_terminal_snr", [False, True])
def test_add_noise_then_to_x0_eps_recovers_both(prediction_type, zero_terminal_snr):
    scheduler = DDIMScheduler(T, zero_terminal_snr=zero_terminal_snr, prediction_type=prediction_type)
    x0, noise = data((16, 3, D)), data((16, 3, D), seed=1)
    t = torch.randint(0, T - 1, (16,), generator=torch.Generator().manual_seed(2))  # ᾱ_t > 0 for all
    xt = scheduler.add_noise(x0, noise, t)
    x0_hat, eps_hat = scheduler.to_x0_eps(scheduler.training_target(x0, noise, t), t, xt)
    torch.testing.assert_close(x0_hat, x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(eps_hat, noise, atol=2e-4, rtol=1e-4)
    # and back: from_epsilon inverts to_x0_eps
    torch.testing.assert_close(scheduler.from_epsilon(eps_hat, t, xt), scheduler.training_target(x0, noise, t),
                               atol=2e-4, rtol=1e-4)


def test_add_noise_broadcasts_per_row_timesteps():
    scheduler = DDIMScheduler(T, zero_terminal_snr=False)
    x0, noise = data((3, 5, D)), data((3, 5, D), seed=1)
    t = torch.tensor([0, 40, 99])
    xt = scheduler.add_noise(x0, noise, t)
    for i, ti in enumerate(t.tolist()):
        a = scheduler.alphas_cumprod[ti]
        torch.testing.assert_close(xt[i], a.sqrt() * x0[i] + (1 - a).sqrt() * noise[i])
    torch.testing.assert_close(scheduler.add_noise(x0, noise, 40), scheduler.add_noise(x0, noise, torch.tensor([40])))


def test_zero_snr_last_timestep_is_pure_noise():
    scheduler = DDIMScheduler(T, zero_terminal_snr=True, prediction_type="v_prediction")
    x0, noise = data(), data(seed=1)
    assert torch.equal(scheduler.add_noise(x0, noise, T - 1), noise)
    torch.testing.assert_close(scheduler.get_velocity(x0, noise, T - 1), -x0)


def test_velocity_definition():
    scheduler = DDIMScheduler(T)
    x0, noise = data(), data(seed=1)
    a = scheduler.alphas_cumprod[30]
    torch.testing.assert_close(scheduler.get_velocity(x0, noise, 30), a.sqrt() * noise - (1 - a).sqrt() * x0)


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_x0_and_v_convert_without_nan_at_zero_snr(prediction_type):
    scheduler = DDIMScheduler(T, zero_terminal_snr=True, prediction_type=prediction_type)
    x0, eps = scheduler.to_x0_eps(data(), T - 1, data(seed=1))
    assert torch.isfinite(x0).all() and torch.isfinite(eps).all()


def test_epsilon_prediction_at_zero_snr_gives_zero_x0():
    scheduler = DDIMScheduler(T, zero_terminal_snr=True, prediction_type="epsilon")
    x0, eps = scheduler.to_x0_eps(data(), torch.tensor([T - 1, 10]), data((2, D), seed=1)[:, None].expand(2, 4, D))
    assert torch.equal(x0[0], torch.zeros(4, D)) and torch.isfinite(x0).all()


def test_bf16_keeps_the_noise_level():
    # in bf16, ᾱ_0 = 0.9994 rounds to 1 and would zero the noise term
    scheduler = DDIMScheduler(T)
    x0, noise = torch.zeros(2, D, dtype=torch.bfloat16), torch.ones(2, D, dtype=torch.bfloat16)
    xt = scheduler.add_noise(x0, noise, torch.tensor([0, 0]))
    assert xt.dtype == torch.bfloat16 and (xt > 0.01).all()


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("zero_terminal_snr", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 7, 40, 100])
def test_oracle_sampling_reaches_the_target(prediction_type, zero_terminal_snr, steps):
    scheduler = DDIMScheduler(T, zero_terminal_snr=zero_terminal_snr, prediction_type=prediction_type)
    # ε -> x0 divides by sqrt(ᾱ_t), about 5e-4 at the last cosine timestep: float32 rounding of the ε
    # output alone would move x0 by ~1e-4 there, so ε prediction is checked in float64
    dtype = torch.float64 if prediction_type == "epsilon" else torch.float32
    x0 = data((5, D), seed=3).to(dtype)
    noise = scheduler.init_noise(x0.shape, torch.Generator().manual_seed(4), dtype=dtype)
    out = sample_loop(scheduler, oracle(scheduler, x0), steps, noise)
    if prediction_type == "epsilon" and zero_terminal_snr and steps == 1:
        # the only step is at ᾱ = 0, where ε carries nothing about x0: the estimate is 0
        assert torch.equal(out, torch.zeros_like(x0))
    else:
        torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_last_step_returns_its_x0_estimate(prediction_type):
    scheduler = DDIMScheduler(T, prediction_type=prediction_type)
    scheduler.set_timesteps(5)
    t, sample, out = int(scheduler.timesteps[-1]), data(), data(seed=1)
    result = scheduler.step(out, t, sample)
    torch.testing.assert_close(result.prev_sample, result.pred_original_sample)
    torch.testing.assert_close(result.pred_original_sample, scheduler.to_x0_eps(out, t, sample)[0])


def test_step_is_the_ddim_update():
    scheduler = DDIMScheduler(T, zero_terminal_snr=False, prediction_type="epsilon")
    scheduler.set_timesteps(10)
    sample, eps = data(), data(seed=1)
    t, prev = int(scheduler.timesteps[2]), int(scheduler.timesteps[3])
    a, a_prev = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[prev]
    x0 = (sample - (1 - a).sqrt() * eps) / a.sqrt()
    expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(scheduler.step(eps, t, sample).prev_sample, expected)


def test_epsilon_scaling():
    scheduler = DDIMScheduler(T, prediction_type="sample")
    scheduler.set_timesteps(10)
    t, sample, out = int(scheduler.timesteps[3]), data(), data(seed=1)
    plain = scheduler.step(out, t, sample)
    same = scheduler.step(out, t, sample, epsilon_scaling=1.0)
    assert torch.equal(plain.prev_sample, same.prev_sample)
    scaled = scheduler.step(out, t, sample, epsilon_scaling=1.5)
    assert torch.equal(scaled.pred_original_sample, plain.pred_original_sample)  # x0 untouched
    a_prev = scheduler.alphas_cumprod[scheduler.previous_timestep(t)]
    eps = scheduler.to_x0_eps(out, t, sample)[1]
    torch.testing.assert_close(scaled.prev_sample - plain.prev_sample, (1 - a_prev).sqrt() * eps * (1 / 1.5 - 1))


def test_clip_sample_clamps_x0():
    scheduler = DDIMScheduler(T, clip_sample=0.5)
    scheduler.set_timesteps(10)
    out = scheduler.step(3 * data(), int(scheduler.timesteps[0]), data(seed=1))
    assert out.pred_original_sample.abs().max() == 0.5


def test_init_noise_scale_and_seed():
    scheduler = DDIMScheduler(T)
    a = scheduler.init_noise((4000, D), torch.Generator().manual_seed(0), scale=0.6)
    b = scheduler.init_noise((4000, D), torch.Generator().manual_seed(0), scale=1.0)
    torch.testing.assert_close(a, 0.6 * b)
    assert a.std().item() == pytest.approx(0.6, rel=0.03)
    assert scheduler.init_noise((2, 3), dtype=torch.float64).dtype == torch.float64


# --- guidance ----------------------------------------------------------------------------------


def guidance_case(prediction_type, zero_terminal_snr=True, step_index=3):
    scheduler = DDIMScheduler(T, zero_terminal_snr=zero_terminal_snr, prediction_type=prediction_type)
    scheduler.set_timesteps(10)
    return scheduler, data((4, D)), data((4, D), seed=1), int(scheduler.timesteps[step_index]), data((4, D), seed=2)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_guidance_scale_one_is_cond(prediction_type):
    scheduler, cond, uncond, t, sample = guidance_case(prediction_type)
    assert torch.equal(classifier_free_guidance(scheduler, cond, uncond, t, sample, 1.0, rescale=0.7), cond)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_guidance_skipped_at_zero_snr(prediction_type):
    scheduler, cond, uncond, _, sample = guidance_case(prediction_type)
    t = int(scheduler.timesteps[0])
    assert scheduler.alphas_cumprod[t] == 0
    guided = classifier_free_guidance(scheduler, cond, uncond, t, sample, 3.0, rescale=0.7)
    assert torch.isfinite(guided).all()
    assert torch.equal(guided, cond)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_plain_guidance_is_linear_in_every_parametrisation(prediction_type):
    # cond and uncond share x_t, so the ε-space combination is the same combination of the raw outputs
    scheduler, cond, uncond, t, sample = guidance_case(prediction_type)
    guided = classifier_free_guidance(scheduler, cond, uncond, t, sample, 3.0)
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), atol=1e-4, rtol=1e-4)


def test_guidance_rescale_zero_is_plain_and_one_matches_cond_std():
    scheduler, cond, uncond, t, sample = guidance_case("sample")
    plain = classifier_free_guidance(scheduler, cond, uncond, t, sample, 3.0)
    assert torch.equal(classifier_free_guidance(scheduler, cond, uncond, t, sample, 3.0, rescale=0.0), plain)
    full = classifier_free_guidance(scheduler, cond, uncond, t, sample, 3.0, rescale=1.0)
    eps_full = scheduler.to_x0_eps(full, t, sample)[1]
    eps_cond = scheduler.to_x0_eps(cond, t, sample)[1]
    torch.testing.assert_close(eps_full.std(-1), eps_cond.std(-1), atol=1e-4, rtol=1e-4)
    half = classifier_free_guidance(scheduler, cond, uncond, t, sample, 3.0, rescale=0.5)
    torch.testing.assert_close(half, (plain + full) / 2, atol=1e-4, rtol=1e-4)  # rescale mixes linearly


def test_guided_sampling_with_an_oracle_stays_on_target():
    # cond and uncond both exact: guidance changes nothing, even with rescale
    scheduler = DDIMScheduler(T, zero_terminal_snr=True, prediction_type="sample")
    x0 = data((3, D), seed=5)
    predict = oracle(scheduler, x0)

    def guided(x, t):
        out = predict(x, t)
        return classifier_free_guidance(scheduler, out, out, t, x, 3.0, rescale=0.7)

    out = sample_loop(scheduler, guided, 40, scheduler.init_noise(x0.shape, torch.Generator().manual_seed(6), 0.6),
                      epsilon_scaling=1.0)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


# --- argument checks ---------------------------------------------------------------------------


def test_scheduler_errors():
    with pytest.raises(ValueError, match="unknown prediction_type"):
        DDIMScheduler(prediction_type="noise")
    with pytest.raises(ValueError, match="unknown noise schedule"):
        DDIMScheduler(schedule="karras")
    with pytest.raises(ValueError, match="clip_sample"):
        DDIMScheduler(clip_sample=0.0)
    with pytest.raises(ValueError, match="float32"):
        DDIMScheduler(1000, schedule="linear", zero_terminal_snr=False, beta_start=1e-9, beta_end=1e-8)
    scheduler = DDIMScheduler(T)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(data(), T - 1, data())
    for bad in (0, T + 1):
        with pytest.raises(ValueError, match="num_inference_steps"):
            scheduler.set_timesteps(bad)
    with pytest.raises(ValueError, match="outside"):
        scheduler.add_noise(data(), data(), T)
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match="outside"):
        scheduler.step(data(), -1, data())
    with pytest.raises(ValueError, match="rescale"):
        classifier_free_guidance(scheduler, data(), data(), 50, data(), 3.0, rescale=1.5)
