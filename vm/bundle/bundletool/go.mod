module k8s-manager/vm/bundle/bundletool

go 1.24
