module example.com/scratchapp

go 1.22
