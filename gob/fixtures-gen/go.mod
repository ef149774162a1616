module weavegobfixtures

go 1.19
