module example.com/workspace-server

go 1.22
