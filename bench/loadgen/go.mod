module rhythm/bench/loadgen

go 1.22
