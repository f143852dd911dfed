from reca_nb.reproduce.run import main

main()
