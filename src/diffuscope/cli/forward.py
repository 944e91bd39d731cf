"""``diffuscope forward``: the forward process as a picture, by the closed form and by the step-by-step chain."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types

VP_SCHEDULES = ("linear", "cosine", "scaled_linear")


def add_parser(sub) -> None:
    p = sub.add_parser("forward", help="picture of the forward (noising) process of one image",
                       description="Noise one image to forward steps t (0 = clean, T = last step) with a VP "
                                   "schedule. Writes DIR/forward.png: row 1 the closed form q(x_t|x_0), row 2 the "
                                   "step-by-step chain q(x_t|x_(t-1)), same seed, each panel captioned with t, "
                                   "sqrt(alpha_bar) and SNR in dB; and DIR/forward.json with the numbers.")
    p.add_argument("--data", default=None, type=types.name,
                   help="digits | mnist | emoji | scenes | PATH: the data set (default: --model's, else mnist)")
    p.add_argument("--model", type=types.name,
                   help="a latent model (e.g. emoji): also show the forward process on its encoded image, decoded "
                        "and channel by channel (DIR/forward_latent.png)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--index", type=types.int_range(0, 2**40, "index"),
                     help="image number in the data set (default 0)")
    src.add_argument("--image", metavar="FILE", type=types.name,
                     help="a PNG/JPEG of the data set's size and channels instead")
    p.add_argument("--t", default="0,250,500,750,1000", help="forward steps, comma-separated, each in 0..T "
                                                            "(default 0,250,500,750,1000)")
    p.add_argument("--schedule", default="linear", choices=VP_SCHEDULES, help="VP noise schedule (default linear)")
    p.add_argument("--timesteps", type=types.timesteps, default=1000, help="T, the number of forward steps "
                                                                              "(default 1000)")
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="noise seed for both rows (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.checks.errors import UsageError
    from diffuscope.core.schedules import ScheduleConfig, make_schedule
    from diffuscope.io.outputs import prepare_out
    from diffuscope.lesson.forward import forward_process, parse_t_list, pick_image, save_forward

    schedule = make_schedule(ScheduleConfig(kind=args.schedule, num_timesteps=args.timesteps))
    args.out = prepare_out(args.out, "forward")
    t = parse_t_list(args.t, schedule.num_timesteps)
    model = None
    if args.model is not None:
        from diffuscope.models.load import load_model

        model = load_model(args.model)
        if model.codec is None:
            raise UsageError(f"--model {args.model} is not a latent model: its forward process is the pixel one "
                             f"(leave --model out)")
    data = args.data or (model.data_name if model is not None else None) or "mnist"
    x0, source = pick_image(data, args.index, args.image)
    result = forward_process(x0, schedule, t, seed=args.seed, source=source)
    paths = save_forward(result, args.out)
    if model is not None:
        from diffuscope.lesson.forward import save_forward_latent

        if tuple(x0.shape) != tuple(model.image_shape):
            raise UsageError(f"the image is {'x'.join(map(str, x0.shape))} but {args.model} encodes "
                             f"{'x'.join(map(str, model.image_shape))} images: use its data set (--data emoji)")
        z = model.encode(x0[None])[0]
        latent = forward_process(z, schedule, t, seed=args.seed, source=f"{source}, encoded by {model.name}")
        paths.append(save_forward_latent(latent, model.decode, x0.shape[-1], args.out))
    print(f"forward process of {source}: {result.schedule} schedule, T = {result.num_timesteps}, seed {args.seed}")
    for k, s, d in zip(result.t, result.sqrt_alpha_bar, result.snr_db):
        print(f"  t = {k:>5}: sqrt(alpha_bar) = {s:.4g}, SNR = {d:+.1f} dB")
    print("rows of forward.png: closed form (top), step-by-step chain with the same seed (bottom)")
    if model is not None:
        print("rows of forward_latent.png: the decoded noisy latent, then each latent channel")
    for path in paths:
        print(path)
    return 0
