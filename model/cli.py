"""`python -m fd2talk.model.cli`: fd2talk-train under the module name torchrun launches
(`torchrun -m fd2talk.model.cli motion ...`). The commands live in `fd2talk.cli.train`; this
module is an entry point only, so nothing is imported unless it is run."""

if __name__ == "__main__":
    from fd2talk.cli.train import main

    main()
