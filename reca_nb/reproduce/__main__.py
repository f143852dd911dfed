from reca_nb.reproduce import main

main()
