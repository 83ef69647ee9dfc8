/*
 * cli/train.c — `prefrun train`: options, configuration layering, the run
 * directory, and the exit code. The loop itself is train.c.
 *
 * Configuration layers, later ones win: the defaults; the resumed run's
 * checkpoint config (--resume); --config FILE; the flags --model, --data,
 * --eval-data, --threads; each --set key=value in order.
 *
 * A run of a Hugging Face model (--model, or the setting model) takes none
 * of the built-in task's settings or its reference: without --data it
 * trains on the task's pair texts, tokenized by the model's tokenizer.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/hf_model.h"
#include "cli/cli.h"
#include "cli/options.h"
#include "train/config.h"
#include "util/fsutil.h"
#include "task/task_data.h"
#include "train/run_dir.h"
#include "train/train.h"
#include "task/eval.h"
#include "util/jsonfile.h"
#include "util/mpi_comm.h"
#include "util/timeutil.h"

#define MAX_SETS 64
#define PATH_LEN 1024

typedef struct TrainArgs {
    const char *model, *data, *eval_data, *out, *config, *resume;
    double weights[TRAIN_MAX_LOSSES]; /* --loss-weights */
    int n_weights;
    const char *sets[MAX_SETS];
    int n_sets, threads; /* threads -1: not given */
    bool quiet;
    int n_losses;
    const char *losses[TRAIN_MAX_LOSSES];
    char resumed_losses[TRAIN_MAX_LOSSES][PATH_LEN + 32];
    int n_saved_weights; /* the resumed run's loss weights */
    double saved_weights[TRAIN_MAX_LOSSES];
    const char *task; /* --task builtin|toy; NULL: builtin unless data is named */
    bool builtin;     /* the built-in task's settings go under the user's */
    bool task_run;    /* trains on the task's pairs: its reward can judge the policy */
    bool no_eval;     /* --no-eval: no closing evaluation */
} TrainArgs;

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun train LOSS.lua [LOSS2.lua ...] [options]\n\n"
               "Trains a GPT policy against its frozen initial copy (the reference) on\n"
               "preference pairs, with the loss computed each step by the Lua script(s).\n"
               "Several scripts are summed with weights, as TRL's list loss_type does.\n\n"
               "options:\n"
               "  --loss-weights W1,W2,...  one weight per loss script (default: all 1)\n"
               "  --model DIR               a Hugging Face model folder (config.json,\n"
               "                            safetensors weights, tokenizer files) to train:\n"
               "                            the policy starts from its weights, the reference\n"
               "                            is a frozen copy of them, the data goes through its\n"
               "                            tokenizer and chat template; the run keeps a copy\n"
               "                            of its config and tokenizer in RUN_DIR/hf/ (the\n"
               "                            same as --set model=DIR; default: prefrun's own\n"
               "                            byte-level GPT)\n"
               "  --data FILE.jsonl         TRL preference pairs {prompt, chosen, rejected}\n"
               "                            (default: the built-in task, see --task)\n"
               "  --task builtin|toy        builtin: the review task's pairs, with the policy\n"
               "                            starting from its cached pretrained reference\n"
               "                            (built on first use; see prefrun pretrain);\n"
               "                            toy: the small generated toy data set\n"
               "  --eval-data FILE.jsonl    held-out pairs (default: eval_fraction of the data)\n"
               "  --out RUN_DIR             run directory (default: runs/<loss name>, or\n"
               "                            runs/<loss name>-2, -3, ... when taken); one\n"
               "                            without a checkpoint is started over, one with\n"
               "                            a checkpoint needs --resume, and one inside\n"
               "                            another run or a checkpoint is refused\n"
               "  --config RUN.yaml         settings file (keys below)\n"
               "  --set KEY=VALUE           override one setting; repeatable; a loss param\n"
               "                            by name (--set beta=0.2) or as loss.NAME\n"
               "  --resume RUN_DIR          continue RUN_DIR from its latest checkpoint, with\n"
               "                            its saved config (LOSS.lua may then be omitted);\n"
               "                            a run of a model reads the reference's weights\n"
               "                            from its folder again (--model names it if moved)\n"
               "  --threads N               OpenMP and OpenBLAS threads (default: all cores)\n"
               "  --no-eval                 on the built-in task, skip the closing evaluation\n"
               "                            (by default the run ends as `prefrun eval RUN`\n"
               "                            does: held-out accuracy, reward and its gain over\n"
               "                            the reference with 95%% intervals, KL, win rate;\n"
               "                            also written to RUN_DIR/eval.json)\n"
               "  --quiet                   no progress output\n"
               "  -h, --help                this text\n\n"
               "The run directory gets config.yaml, metrics.jsonl (TRL's metric names, one\n"
               "line per logging step, eval_* lines per evaluation) and checkpoint-<step>/\n"
               "directories (safetensors) with a `latest` pointer.\n\n"
               "Under `mpirun -np N prefrun train ...` (a build with MPI) the ranks split\n"
               "each batch and sum their gradients; the global batch, and so the metrics,\n"
               "stay those of one process; only rank 0 writes RUN_DIR; --threads is per\n"
               "rank (README, \"More than one machine\").\n\n"
               "settings (--config / --set):\n");
    for (int i = 0; i < config_key_count(); i++)
        fprintf(f, "  %-28s %s\n", config_key_name(i), config_key_help(i));
    fprintf(f, "\nexamples:\n"
               "  prefrun train losses/discopop.lua\n"
               "  prefrun train losses/dpo.lua losses/sft.lua --loss-weights 1,0.2 \\\n"
               "      --set beta=0.1 --set max_steps=200 --out runs/rpo\n"
               "  prefrun train --resume runs/rpo --set max_steps=400\n");
}

static int parse_args(int argc, char **argv, TrainArgs *a)
{
    const CliOpt opts[] = {
        CLI_DOUBLES("loss-weights", 0, a->weights, &a->n_weights, -TRAIN_MAX_LOSS_WEIGHT,
                    TRAIN_MAX_LOSS_WEIGHT, false),
        CLI_STRING("model", 0, &a->model),
        CLI_STRING("data", 0, &a->data),
        CLI_STRING("eval-data", 0, &a->eval_data),
        CLI_STRING("out", 0, &a->out),
        CLI_STRING("config", 0, &a->config),
        CLI_STRINGS("set", 0, a->sets, &a->n_sets),
        CLI_STRING("resume", 0, &a->resume),
        CLI_INT("threads", 0, &a->threads, 0, 1 << 10),
        CLI_FLAG("quiet", 0, &a->quiet),
        CLI_FLAG("no-eval", 0, &a->no_eval),
        CLI_STRING("task", 0, &a->task),
    };
    const CliCommand cmd = {CLI_COMMAND("train", usage, opts), .operand = "LOSS.lua",
                            .operands = a->losses, .n_operands = &a->n_losses,
                            .max_operands = CLI_N(a->losses)};
    a->threads = -1;
    int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_CONTINUE)
        return rc;
    if (a->n_losses == 0 && !a->resume)
        return cli_usage_error("train",
                               "a loss script is required, e.g. "
                               "prefrun train losses/discopop.lua (see prefrun train --help)");
    if (a->resume && a->out && strcmp(a->resume, a->out) != 0)
        return cli_usage_error("train", "--out %s and --resume %s name different runs", a->out,
                               a->resume);
    return CLI_CONTINUE;
}

/* --loss-weights, else the resumed run's, else all 1 */
static int loss_weights(const TrainArgs *a, double *w, int n)
{
    if (a->n_weights && a->n_weights != n)
        return cli_usage_error("train",
                               "--loss-weights: expected one number per loss script (%d), got %d",
                               n, a->n_weights);
    for (int i = 0; i < n; i++)
        w[i] = a->n_weights ? a->weights[i] : a->n_saved_weights == n ? a->saved_weights[i] : 1.0;
    return 0;
}

/* The resumed run's loss weights (trainer_state.json's loss_weight.<i>, in
 * order while present), each checked as --loss-weights would be. */
static int saved_weights(TrainArgs *a, const TrainerState *st, const char *dir, char *err,
                         size_t errlen)
{
    a->n_saved_weights = 0;
    for (int i = 0; i < TRAIN_MAX_LOSSES; i++) {
        char name[CKPT_VALUE_NAME_LEN], what[PATH_LEN + 128];
        snprintf(name, sizeof name, "loss_weight.%d", i);
        int k = 0; /* present: a NaN is refused below, not taken for absent */
        while (k < st->n_values && strcmp(st->value_names[k], name) != 0)
            k++;
        if (k == st->n_values)
            break;
        snprintf(what, sizeof what, "loss %d in %s/%s (value \"%s\")", i + 1, dir, CKPT_STATE_FILE,
                 name);
        if (train_check_loss_weight(st->values[k], what, err, errlen) != 0)
            return -1;
        a->saved_weights[a->n_saved_weights++] = st->values[k];
    }
    return 0;
}

/* With --resume: the checkpoint's config.yaml as the base layer, and its
 * loss scripts when none are named. */
static int resume_base(TrainArgs *a, Config *cfg, char *err, size_t errlen)
{
    char dir[PATH_LEN], path[PATH_LEN + 32];
    int64_t step;
    int rc = ckpt_find_latest(a->resume, dir, sizeof dir, &step, err, errlen);
    if (rc == 1)
        snprintf(err, errlen, "--resume %s: no checkpoint there to resume from", a->resume);
    if (rc != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_CONFIG_FILE);
    if (config_load_yaml(cfg, path, err, errlen) != 0)
        return -1;
    TrainerState st;
    if (ckpt_state_load_at(dir, step, &st, err, errlen) != 0 ||
        saved_weights(a, &st, dir, err, errlen) != 0)
        return -1;
    for (int i = 0; a->n_losses == i && i < TRAIN_MAX_LOSSES; i++) {
        if (i == 0)
            snprintf(path, sizeof path, "%s/%s", dir, CKPT_LOSS_FILE);
        else
            snprintf(path, sizeof path, "%s/loss-%d.lua", dir, i + 1);
        if (!fsutil_exists(path))
            break;
        snprintf(a->resumed_losses[i], sizeof a->resumed_losses[i], "%s", path);
        a->losses[a->n_losses++] = a->resumed_losses[i];
    }
    return 0;
}

static int build_config(TrainArgs *a, Config *cfg, char *err, size_t errlen)
{
    config_defaults(cfg);
    if (a->builtin)
        task_train_defaults(cfg);
    if (a->resume && resume_base(a, cfg, err, errlen) != 0)
        return -1;
    if (a->config && config_load_yaml(cfg, a->config, err, errlen) != 0)
        return -1;
    if (a->model && strlen(a->model) >= sizeof cfg->model)
        return snprintf(err, errlen, "--model: the path is longer than %zu bytes",
                        sizeof cfg->model - 1),
               -1;
    if (a->model)
        snprintf(cfg->model, sizeof cfg->model, "%s", a->model);
    if (a->data)
        snprintf(cfg->train_file, sizeof cfg->train_file, "%s", a->data);
    if (a->eval_data)
        snprintf(cfg->eval_file, sizeof cfg->eval_file, "%s", a->eval_data);
    if (a->threads >= 0)
        cfg->threads = a->threads;
    for (int i = 0; i < a->n_sets; i++)
        if (config_set(cfg, a->sets[i], err, errlen) != 0)
            return -1;
    if (a->resume && cfg->model[0] && !hf_model_is_folder(cfg->model))
        return snprintf(err, errlen,
                        "--resume %s: its model folder %s has no config.json (moved?); the "
                        "reference's weights are read from it: name where it is with --model DIR",
                        a->resume, cfg->model),
               -1;
    return config_finalize(cfg, err, errlen);
}

/* "losses/discopop.lua" -> "discopop"; several joined with '+'. */
static void run_name(const TrainArgs *a, char *out, size_t len)
{
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < a->n_losses && k < len; i++) {
        const char *base = strrchr(a->losses[i], '/');
        base = base ? base + 1 : a->losses[i];
        size_t n = strlen(base);
        if (n > 4 && strcmp(base + n - 4, ".lua") == 0)
            n -= 4;
        k += (size_t)snprintf(out + k, len - k, "%s%.*s", i ? "+" : "", (int)n, base);
    }
}

/* --resume, --out, output_dir, or the first free runs/<name>[-k]; where a
 * run may live is run_dir.h's rule. */
static int choose_run_dir(const TrainArgs *a, const Config *cfg, char *dir, size_t len)
{
    const char *given = a->resume            ? a->resume
                        : a->out             ? a->out
                        : cfg->output_dir[0] ? cfg->output_dir
                                             : NULL;
    if (given) {
        snprintf(dir, len, "%s", given);
    } else {
        char name[256];
        run_name(a, name, sizeof name);
        snprintf(dir, len, "runs/%s", name);
        for (int k = 2; run_dir_holds_run(dir) && k < 10000; k++)
            snprintf(dir, len, "runs/%s-%d", name, k);
    }
    char err[2 * PATH_LEN];
    if (run_dir_check(dir, a->resume != NULL, err, sizeof err) != 0) {
        fprintf(stderr, "prefrun train: %s\n", err);
        return EXIT_USAGE;
    }
    return 0;
}

/* The built-in task's pairs for a run of a model folder: their texts only,
 * which the model's tokenizer tokenizes; the task's settings and its
 * byte-level reference are its own model's, not this one's. */
static int task_pairs_for_model(const TrainArgs *a, Config *cfg, TaskAssets *t, char *err,
                                size_t errlen)
{
    TaskPrepareOptions o;
    task_prepare_defaults(&o);
    o.quiet = a->quiet;
    if (task_prepare(&o, t, err, errlen) != 0)
        return -1;
    snprintf(cfg->train_file, sizeof cfg->train_file, "%s", t->train_file); /* same size */
    if (!cfg->eval_file[0])
        snprintf(cfg->eval_file, sizeof cfg->eval_file, "%s", t->eval_file);
    return 0;
}

/* The built-in task when no data is named (or --task builtin): the config
 * is rebuilt over its settings, then pointed at its pairs, and the policy
 * starts from its reference. A run on task files (--resume) finds its
 * reference beside them. A run of a model folder takes the task's pairs
 * only. */
static int use_task(TrainArgs *a, TrainOptions *opt, TaskAssets *t, char *err, size_t errlen)
{
    bool named = opt->cfg.train_file[0];
    /* a resumed run without a train_file trained on the toy data: keep it */
    bool toy = (a->task && strcmp(a->task, "toy") == 0) || (a->resume && !named);
    if (a->task && !toy && strcmp(a->task, "builtin") != 0)
        return snprintf(err, errlen, "--task %s: expected builtin or toy", a->task), -1;
    if (a->task && !toy && named && !a->resume)
        return snprintf(err, errlen, "--task builtin and --data name different data"), -1;
    if (opt->cfg.model[0]) {
        a->task_run = !toy && !named;
        return toy || named ? 0 : task_pairs_for_model(a, &opt->cfg, t, err, errlen);
    }
    int rc = toy ? 1 : named ? task_assets_find(opt->cfg.train_file, t, err, errlen) : 0;
    a->task_run = rc == 0;
    if (rc == 0 && !named) {
        a->builtin = true;
        rc = build_config(a, &opt->cfg, err, errlen);
        rc = rc ? rc : task_train_setup(&opt->cfg, a->quiet, t, err, errlen);
    }
    if (rc == 0)
        opt->init_model = t->reference;
    return rc < 0 ? -1 : 0;
}

/* The closing block: the run evaluated as `prefrun eval RUN` does, printed
 * on stdout and kept in RUN_DIR/eval.json. */
static void print_summary(const EvalResult *r, const TrainResult *res, const char *dir,
                          double eval_s)
{
    bool above = r->gain - r->gain_ci > 0, below = r->gain + r->gain_ci < 0;
    printf("\nsummary (held-out prompts of the task, %lld samples; 95%% intervals)\n",
           (long long)r->samples);
    if (isnan(r->accuracy))
        printf("  accuracy     - (no held-out pairs)\n");
    else
        printf("  accuracy     %.3f on %lld held-out pairs\n", r->accuracy, (long long)r->pairs);
    printf("  reward       %+.3f +- %.3f   reference %+.3f +- %.3f\n", r->reward, r->reward_ci,
           r->ref_reward, r->ref_reward_ci);
    printf("  gain         %+.3f +- %.3f   (%s)\n", r->gain, r->gain_ci,
           above   ? "above the reference"
           : below ? "below the reference"
                   : "not resolved from the reference at this sample size");
    printf("  kl           %.3f +- %.3f nats per sequence\n", r->kl, r->kl_ci);
    printf("  win rate     %.3f\n", r->win_rate);
    printf("  wall time    %.1f s training, %.1f s evaluation\n", res->seconds, eval_s);
    printf("  metrics      %s/metrics.jsonl, evaluation %s/eval.json\n", dir, dir);
    printf("  checkpoint   %s\n", r->model);
}

static int summarize(const char *dir, const TrainResult *res, bool quiet)
{
    char err[2048], path[PATH_LEN + 16];
    EvalOptions o;
    eval_defaults(&o);
    o.quiet = true;
    EvalResult r;
    double t0 = timeutil_now();
    if (!quiet)
        fprintf(stderr, "prefrun train: evaluating (as prefrun eval %s; --no-eval skips)\n", dir);
    if (eval_path(dir, &o, &r, err, sizeof err) != 0) {
        fprintf(stderr, "prefrun train: the closing evaluation: %s\n", err);
        return EXIT_FAILED;
    }
    snprintf(path, sizeof path, "%s/eval.json", dir);
    json_t *j = eval_result_json(&r);
    int rc = j ? jsonfile_save(path, j, err, sizeof err) : -1;
    json_decref(j);
    if (rc != 0) {
        fprintf(stderr, "prefrun train: %s\n", j ? err : "out of memory");
        return EXIT_FAILED;
    }
    print_summary(&r, res, dir, timeutil_now() - t0);
    return EXIT_OK;
}

/* The run's settings, task and directory. Under mpirun rank 0 chooses the
 * directory (the first free runs/<name>[-k] would differ between ranks
 * racing for it) and prepares the task's files first; the other ranks wait
 * for its choice, then find the task's files ready. */
static int prepare(TrainArgs *a, TrainOptions *opt, TaskAssets *task, char *dir, size_t len)
{
    char err[2048];
    int rank = comm_rank(), rc = 0;
    if (rank > 0 && comm_bcast_text(dir, len, err, sizeof err) != 0)
        return fprintf(stderr, "prefrun train: rank %d: %s\n", rank, err), EXIT_FAILED;
    if (rank > 0 && !dir[0])
        return EXIT_FAILED; /* rank 0 said why */
    if (build_config(a, &opt->cfg, err, sizeof err) != 0 ||
        use_task(a, opt, task, err, sizeof err) != 0) {
        fprintf(stderr, "prefrun train: %s\n", err);
        rc = EXIT_INPUT;
    }
    if (rc == 0)
        rc = loss_weights(a, opt->loss_weights, a->n_losses);
    if (rc == 0 && rank == 0)
        rc = choose_run_dir(a, &opt->cfg, dir, len);
    if (rank == 0 && comm_size() > 1) {
        if (rc != 0)
            dir[0] = '\0';
        if (comm_bcast_text(dir, len, err, sizeof err) != 0)
            return fprintf(stderr, "prefrun train: %s\n", err), EXIT_FAILED;
    }
    return rc;
}

static int run(TrainArgs *a)
{
    char err[2048];
    TrainOptions opt = {.resume = a->resume != NULL, .quiet = a->quiet, .data_parallel = true};
    TaskAssets task;
    char dir[PATH_LEN] = "";
    int rc = prepare(a, &opt, &task, dir, sizeof dir);
    if (rc != 0)
        return rc;
    opt.n_losses = a->n_losses;
    for (int i = 0; i < a->n_losses; i++)
        opt.loss_paths[i] = a->losses[i];
    opt.run_dir = dir;
    if (!a->quiet)
        fprintf(stderr, "prefrun train: %s -> %s%s\n", a->resume ? "resuming" : "run", dir,
                comm_size() > 1 ? " (data parallel over the ranks of mpirun)" : "");
    TrainResult res;
    TrainStatus st = train_run(&opt, &res, err, sizeof err);
    if (st != TRAIN_OK) {
        fprintf(stderr, "prefrun train: %s\n", err);
        /* a failure past set-up may be this rank's alone: its peers would
         * wait for it in the next gradient sum */
        if (st != TRAIN_BAD_INPUT)
            comm_abort(EXIT_FAILED);
        return st == TRAIN_BAD_INPUT ? EXIT_INPUT : EXIT_FAILED;
    }
    if (comm_rank() > 0)
        return EXIT_OK; /* rank 0 reports and evaluates */
    if (!a->quiet) {
        fprintf(stderr,
                "prefrun train: steps %lld-%lld of %lld in %.1f s; loss %.4f, "
                "rewards/accuracies %.3f",
                (long long)res.first_step + 1, (long long)res.steps, (long long)res.total_steps,
                res.seconds, res.last_loss, res.last_accuracy);
        if (res.skipped_batches)
            fprintf(stderr, "; %lld batches skipped (nan_policy = skip)",
                    (long long)res.skipped_batches);
        if (res.world > 1)
            fprintf(stderr, "; %d ranks, %.1f%% of the time waiting on each other", res.world,
                    100.0 * res.comm_seconds / (res.seconds > 0 ? res.seconds : 1));
        fprintf(stderr, "\nprefrun train: metrics in %s/metrics.jsonl\n", dir);
    }
    return a->task_run && !a->no_eval ? summarize(dir, &res, a->quiet) : EXIT_OK;
}

int cmd_train(int argc, char **argv)
{
    TrainArgs a = {0};
    char err[1024];
    if (comm_init(err, sizeof err) != 0) {
        fprintf(stderr, "prefrun train: %s\n", err);
        return EXIT_FAILED;
    }
    int rc = parse_args(argc, argv, &a);
    if (rc == CLI_CONTINUE && comm_rank() > 0)
        a.quiet = true; /* one voice: rank 0's */
    rc = rc == CLI_CONTINUE ? run(&a) : rc;
    comm_finalize(false);
    return rc;
}
