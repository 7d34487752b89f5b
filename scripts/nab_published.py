"""NAB's published results for the 12 files of `nab/dev/`: each detector's standard-profile
raw score per file, as NAB's own scorer wrote it (`Score` of the `*_standard_scores.csv` of the
NAB repository, github.com/numenta/NAB, MIT licence), at the commit whose totals give the
published scoreboard (100 (total + 116) / 232: 116 labelled windows in the 58 files).

Their sum over the 12 files, normalised as `ebgand_trainer.nab` normalises (null = -23, perfect
= +23), is each detector's NAB dev score, comparable with `scripts/eval_judgment.py`'s. Each
detector's threshold was chosen by NAB's sweep over all 58 files, not the 12.
"""

# name: (path in the NAB repository, commit, score on all 58 files, {file: raw score})
PUBLISHED = {
    "Numenta HTM": (
        "results/numenta/numenta_standard_scores.csv",
        "4b89bafeb45bbfdc8a393521cf70f2e0a3af8cc5",
        70.1,
        {
            "art_daily_flatmiddle": 0.499996314723,
            "art_daily_jumpsdown": 0.748908670438,
            "art_daily_jumpsup": 0.86067182427,
            "art_daily_nojump": -1.27835146592,
            "art_increase_spike_density": 0.86067182427,
            "art_load_balancer_spikes": 0.734788146524,
            "cpu_utilization_asg_misconfiguration": -0.255718003788,
            "ec2_request_latency_system_failure": 1.70586905384,
            "machine_temperature_system_failure": 1.36013273774,
            "nyc_taxi": 2.43572773247,
            "rogue_agent_key_hold": -1.11370102385,
            "rogue_agent_key_updown": -1.29575982814,
        },
    ),
    "ARTime": (
        "results/ARTime/ARTime_standard_scores.csv",
        "5a98e4f15e4508b2d1472ac31db2467dd87a9a28",
        74.9,
        {
            "art_daily_flatmiddle": 0.8039739326751801,
            "art_daily_jumpsdown": 0.9934530536103384,
            "art_daily_jumpsup": 0.8589086704377245,
            "art_daily_nojump": -1.11,
            "art_increase_spike_density": 0.846035950698122,
            "art_load_balancer_spikes": 0.0493832824805146,
            "cpu_utilization_asg_misconfiguration": -0.257470331859453,
            "ec2_request_latency_system_failure": 1.3905835377463662,
            "machine_temperature_system_failure": 2.5563301921824606,
            "nyc_taxi": 3.775210013719179,
            "rogue_agent_key_hold": -1.280892312855327,
            "rogue_agent_key_updown": -2.567650916046798,
        },
    ),
    "CAD OSE": (
        "results/contextOSE/contextOSE_standard_scores.csv",
        "08d093545d801517e0e6f89c5b396319a93c0a1b",
        69.9,
        {
            "art_daily_flatmiddle": 0.905472168219,
            "art_daily_jumpsdown": 0.75067182427,
            "art_daily_jumpsup": 0.86067182427,
            "art_daily_nojump": -1.22,
            "art_increase_spike_density": 0.86241650019,
            "art_load_balancer_spikes": 0.600378699165,
            "cpu_utilization_asg_misconfiguration": -0.141289753023,
            "ec2_request_latency_system_failure": 1.99064449099,
            "machine_temperature_system_failure": -0.164969541073,
            "nyc_taxi": -1.31976791841,
            "rogue_agent_key_hold": -0.959262194153,
            "rogue_agent_key_updown": -2.22,
        },
    ),
    "relative entropy": (
        "results/relativeEntropy/relativeEntropy_standard_scores.csv",
        "bf2de21c7dc3f0d2ff6754bbe0efedcc3162eb94",
        54.6,
        {
            "art_daily_flatmiddle": 0.885996850433,
            "art_daily_jumpsdown": 0.601686647012,
            "art_daily_jumpsup": 0.86067182427,
            "art_daily_nojump": -1.33,
            "art_increase_spike_density": -1.0,
            "art_load_balancer_spikes": 0.779398691694,
            "cpu_utilization_asg_misconfiguration": 0.424230234496,
            "ec2_request_latency_system_failure": 2.03586905384,
            "machine_temperature_system_failure": -0.916101489945,
            "nyc_taxi": 3.83335967699,
            "rogue_agent_key_hold": -1.51582076131,
            "rogue_agent_key_updown": -2.48766861129,
        },
    ),
}
